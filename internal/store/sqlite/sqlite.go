// Package sqlite is the SQLite backend of identity.Store, built on the pure
// Go modernc.org/sqlite driver so podid stays a single static binary.
//
// SQLite allows one writer at a time. The Store therefore keeps two pools on
// the same file: a write pool of exactly one connection whose transactions
// begin IMMEDIATE (so concurrent writers in this process queue in Go instead
// of failing with SQLITE_BUSY), and a read pool of several connections that,
// thanks to WAL mode, never wait for the writer. A busy timeout covers other
// processes that open the same file.
//
// Times are stored as INTEGER unix nanoseconds and returned in UTC with full
// nanosecond precision; the zero time.Time is stored as 0 and comes back as
// the zero time.Time. An empty or nil tag map is stored as NULL and comes
// back as nil.
//
// The database file is created with mode 0600 and its directory with 0700:
// cluster key sources may hold an API server bearer token.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podid/podid/internal/identity"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeout is how long a connection waits for another process's lock
// before giving up with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is an identity.Store on one SQLite database file. It is safe for
// concurrent use.
type Store struct {
	path string
	rdb  *sql.DB // read pool
	wdb  *sql.DB // write pool, one connection

	// Hot-path statements, prepared once per pool connection.
	findAssoc   *sql.Stmt
	getAssoc    *sql.Stmt
	findByToken *sql.Stmt
	getCluster  *sql.Stmt
	appendAudit *sql.Stmt

	closeOnce sync.Once
	closeErr  error
}

var _ identity.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates its
// schema forward. It refuses, with an error wrapping ErrSchemaTooNew, a
// database written by a newer podid.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: %q is not a database file path", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: resolve %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create directory of %s: %w", abs, err)
	}
	// Creating the file ourselves fixes its mode; SQLite gives the -wal and
	// -shm files the same mode as the database.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: create %s: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: create %s: %w", abs, err)
	}

	s := &Store{path: abs}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()

	busy := strconv.FormatInt(busyTimeout.Milliseconds(), 10)
	s.wdb, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {busy},
		"_foreign_keys": {"1"},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"NORMAL"},
		"_txlock":       {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	if err := s.wdb.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	if err := migrate(ctx, s.wdb, migrations); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", abs, err)
	}

	// The read pool is opened after the migration so that WAL mode, which
	// is a persistent property of the file, is already set.
	s.rdb, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_busy_timeout": {busy},
		"_foreign_keys": {"1"},
		"_query_only":   {"1"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.rdb.SetMaxOpenConns(readers)
	s.rdb.SetMaxIdleConns(readers)
	s.rdb.SetConnMaxLifetime(0)
	s.rdb.SetConnMaxIdleTime(0)
	if err := s.rdb.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}

	if err := s.prepare(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", abs, err)
	}
	ok = true
	return s, nil
}

// dsn builds a file: URI so that any character in the path, '?' included,
// survives: the driver splits a plain name at its first '?'.
func dsn(abs string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

const assocColumns = `id, cluster, namespace, service_account, role_arn, target_role_arn,
	disable_session_tags, policy, external_id, tags, owner_arn, client_request_token,
	created_at, modified_at`

const clusterColumns = `name, issuer, key_source, created_at, modified_at`

const auditColumns = `id, time, cluster, namespace, service_account, pod_name, pod_uid,
	node_name, association_id, role_arn, outcome, error_type, message, sts_request_id`

func (s *Store) prepare(ctx context.Context) error {
	stmts := []struct {
		dst **sql.Stmt
		db  *sql.DB
		sql string
	}{
		// The (cluster, namespace, service_account) UNIQUE index answers
		// this with one index lookup; see TestFindAssociationUsesIndex.
		{&s.findAssoc, s.rdb, `SELECT ` + assocColumns + ` FROM associations
			WHERE cluster = ? AND namespace = ? AND service_account = ?`},
		{&s.getAssoc, s.rdb, `SELECT ` + assocColumns + ` FROM associations
			WHERE id = ? AND cluster = ?`},
		{&s.findByToken, s.rdb, `SELECT ` + assocColumns + ` FROM associations
			WHERE cluster = ? AND client_request_token = ? ORDER BY created_at, id LIMIT 1`},
		{&s.getCluster, s.rdb, `SELECT ` + clusterColumns + ` FROM clusters WHERE name = ?`},
		{&s.appendAudit, s.wdb, `INSERT INTO audit (time, cluster, namespace, service_account,
			pod_name, pod_uid, node_name, association_id, role_arn, outcome, error_type,
			message, sts_request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
	}
	for _, st := range stmts {
		p, err := st.db.PrepareContext(ctx, st.sql)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", st.sql, err)
		}
		*st.dst = p
	}
	return nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes both connection pools. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, st := range []*sql.Stmt{s.findAssoc, s.getAssoc, s.findByToken, s.getCluster, s.appendAudit} {
			if st != nil {
				errs = append(errs, st.Close())
			}
		}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		// The writer closes last: closing the last connection checkpoints
		// the WAL into the main file.
		if s.wdb != nil {
			errs = append(errs, s.wdb.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// sqliteCode returns the extended result code of a driver error, or 0.
func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// toDB converts a time to unix nanoseconds in UTC; the zero time is 0
// because its UnixNano is out of range.
func toDB(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromDB(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func encodeTags(tags map[string]string) (sql.NullString, error) {
	if len(tags) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("encode tags: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

func rowsAffected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}

// CreateCluster inserts c; ErrConflict if the name is taken.
func (s *Store) CreateCluster(ctx context.Context, c *identity.Cluster) error {
	keys, err := json.Marshal(c.Keys)
	if err != nil {
		return fmt.Errorf("sqlite: encode key source of cluster %q: %w", c.Name, err)
	}
	_, err = s.wdb.ExecContext(ctx, `INSERT INTO clusters (`+clusterColumns+`) VALUES (?, ?, ?, ?, ?)`,
		c.Name, c.Issuer, string(keys), toDB(c.CreatedAt), toDB(c.ModifiedAt))
	if isUnique(err) {
		return fmt.Errorf("cluster %q: %w", c.Name, identity.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create cluster %q: %w", c.Name, err)
	}
	return nil
}

// UpdateCluster writes every field of c except Name and CreatedAt.
func (s *Store) UpdateCluster(ctx context.Context, c *identity.Cluster) error {
	keys, err := json.Marshal(c.Keys)
	if err != nil {
		return fmt.Errorf("sqlite: encode key source of cluster %q: %w", c.Name, err)
	}
	res, err := s.wdb.ExecContext(ctx, `UPDATE clusters SET issuer = ?, key_source = ?, modified_at = ? WHERE name = ?`,
		c.Issuer, string(keys), toDB(c.ModifiedAt), c.Name)
	if err != nil {
		return fmt.Errorf("sqlite: update cluster %q: %w", c.Name, err)
	}
	n, err := rowsAffected(res)
	if err != nil {
		return fmt.Errorf("sqlite: update cluster %q: %w", c.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("cluster %q: %w", c.Name, identity.ErrNotFound)
	}
	return nil
}

type scanner interface {
	Scan(dest ...any) error
}

func scanCluster(r scanner) (*identity.Cluster, error) {
	var (
		c                 identity.Cluster
		keys              string
		created, modified int64
	)
	if err := r.Scan(&c.Name, &c.Issuer, &keys, &created, &modified); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(keys), &c.Keys); err != nil {
		return nil, fmt.Errorf("decode key source of cluster %q: %w", c.Name, err)
	}
	c.CreatedAt, c.ModifiedAt = fromDB(created), fromDB(modified)
	return &c, nil
}

// GetCluster returns the named cluster or ErrNotFound.
func (s *Store) GetCluster(ctx context.Context, name string) (*identity.Cluster, error) {
	c, err := scanCluster(s.getCluster.QueryRowContext(ctx, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("cluster %q: %w", name, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get cluster %q: %w", name, err)
	}
	return c, nil
}

// ListClusters returns every cluster ordered by name.
func (s *Store) ListClusters(ctx context.Context) ([]identity.Cluster, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+clusterColumns+` FROM clusters ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list clusters: %w", err)
	}
	defer rows.Close()
	var out []identity.Cluster
	for rows.Next() {
		c, err := scanCluster(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list clusters: %w", err)
		}
		out = append(out, *c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list clusters: %w", err)
	}
	return out, nil
}

// DeleteCluster removes the cluster; its associations go with it through
// ON DELETE CASCADE. Audit rows are kept: the ledger outlives what it
// records.
func (s *Store) DeleteCluster(ctx context.Context, name string) error {
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM clusters WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("sqlite: delete cluster %q: %w", name, err)
	}
	n, err := rowsAffected(res)
	if err != nil {
		return fmt.Errorf("sqlite: delete cluster %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("cluster %q: %w", name, identity.ErrNotFound)
	}
	return nil
}

// CreateAssociation inserts a. It fails with ErrConflict when the ID is
// taken or the cluster already maps the namespace and service account, and
// with ErrNotFound when the cluster does not exist.
func (s *Store) CreateAssociation(ctx context.Context, a *identity.Association) error {
	tags, err := encodeTags(a.Tags)
	if err != nil {
		return fmt.Errorf("sqlite: association %q: %w", a.ID, err)
	}
	_, err = s.wdb.ExecContext(ctx, `INSERT INTO associations (`+assocColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.Cluster, a.Namespace, a.ServiceAccount, a.RoleARN, a.TargetRoleARN,
		a.DisableSessionTags, a.Policy, a.ExternalID, tags, a.OwnerARN, a.ClientRequestToken,
		toDB(a.CreatedAt), toDB(a.ModifiedAt))
	switch {
	case err == nil:
		return nil
	case sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("association %q: %w", a.ID, identity.ErrConflict)
	case isUnique(err):
		return fmt.Errorf("association for %s/%s in cluster %q: %w", a.Namespace, a.ServiceAccount, a.Cluster, identity.ErrConflict)
	case isForeignKey(err):
		return fmt.Errorf("cluster %q: %w", a.Cluster, identity.ErrNotFound)
	default:
		return fmt.Errorf("sqlite: create association %q: %w", a.ID, err)
	}
}

func scanAssociation(r scanner) (*identity.Association, error) {
	var (
		a                 identity.Association
		tags              sql.NullString
		created, modified int64
	)
	err := r.Scan(&a.ID, &a.Cluster, &a.Namespace, &a.ServiceAccount, &a.RoleARN, &a.TargetRoleARN,
		&a.DisableSessionTags, &a.Policy, &a.ExternalID, &tags, &a.OwnerARN, &a.ClientRequestToken,
		&created, &modified)
	if err != nil {
		return nil, err
	}
	if tags.Valid {
		if err := json.Unmarshal([]byte(tags.String), &a.Tags); err != nil {
			return nil, fmt.Errorf("decode tags of association %q: %w", a.ID, err)
		}
		if len(a.Tags) == 0 {
			a.Tags = nil
		}
	}
	a.CreatedAt, a.ModifiedAt = fromDB(created), fromDB(modified)
	return &a, nil
}

// GetAssociation returns the association with the ID in the cluster, or
// ErrNotFound (also when the ID belongs to another cluster).
func (s *Store) GetAssociation(ctx context.Context, cluster, id string) (*identity.Association, error) {
	a, err := scanAssociation(s.getAssoc.QueryRowContext(ctx, id, cluster))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get association %q: %w", id, err)
	}
	return a, nil
}

// FindAssociation returns the cluster's association for the namespace and
// service account, or ErrNotFound. It is on the credential hot path and is
// one lookup in the UNIQUE index.
func (s *Store) FindAssociation(ctx context.Context, cluster, namespace, serviceAccount string) (*identity.Association, error) {
	a, err := scanAssociation(s.findAssoc.QueryRowContext(ctx, cluster, namespace, serviceAccount))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("association for %s/%s in cluster %q: %w", namespace, serviceAccount, cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: find association for %s/%s in cluster %q: %w", namespace, serviceAccount, cluster, err)
	}
	return a, nil
}

// FindAssociationByRequestToken returns the cluster's association created
// with the client request token, or ErrNotFound. An empty token never
// matches.
func (s *Store) FindAssociationByRequestToken(ctx context.Context, cluster, token string) (*identity.Association, error) {
	if token == "" {
		return nil, fmt.Errorf("association with empty request token: %w", identity.ErrNotFound)
	}
	a, err := scanAssociation(s.findByToken.QueryRowContext(ctx, cluster, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("association with request token in cluster %q: %w", cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: find association by request token in cluster %q: %w", cluster, err)
	}
	return a, nil
}

// UpdateAssociation writes every field of a except ID, Cluster and
// CreatedAt. ErrNotFound if the association is not in the cluster;
// ErrConflict if the new namespace and service account are taken.
func (s *Store) UpdateAssociation(ctx context.Context, a *identity.Association) error {
	tags, err := encodeTags(a.Tags)
	if err != nil {
		return fmt.Errorf("sqlite: association %q: %w", a.ID, err)
	}
	res, err := s.wdb.ExecContext(ctx, `UPDATE associations SET
		namespace = ?, service_account = ?, role_arn = ?, target_role_arn = ?,
		disable_session_tags = ?, policy = ?, external_id = ?, tags = ?, owner_arn = ?,
		client_request_token = ?, modified_at = ?
		WHERE id = ? AND cluster = ?`,
		a.Namespace, a.ServiceAccount, a.RoleARN, a.TargetRoleARN,
		a.DisableSessionTags, a.Policy, a.ExternalID, tags, a.OwnerARN,
		a.ClientRequestToken, toDB(a.ModifiedAt),
		a.ID, a.Cluster)
	if isUnique(err) {
		return fmt.Errorf("association for %s/%s in cluster %q: %w", a.Namespace, a.ServiceAccount, a.Cluster, identity.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: update association %q: %w", a.ID, err)
	}
	n, err := rowsAffected(res)
	if err != nil {
		return fmt.Errorf("sqlite: update association %q: %w", a.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("association %q in cluster %q: %w", a.ID, a.Cluster, identity.ErrNotFound)
	}
	return nil
}

// DeleteAssociation removes the association from the cluster, or returns
// ErrNotFound.
func (s *Store) DeleteAssociation(ctx context.Context, cluster, id string) error {
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM associations WHERE id = ? AND cluster = ?`, id, cluster)
	if err != nil {
		return fmt.Errorf("sqlite: delete association %q: %w", id, err)
	}
	n, err := rowsAffected(res)
	if err != nil {
		return fmt.Errorf("sqlite: delete association %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	return nil
}

// ListAssociations returns the cluster's associations in ID order, after
// f.AfterID, at most f.Limit of them (all when f.Limit <= 0). An unknown
// cluster has no associations; it is not an error.
func (s *Store) ListAssociations(ctx context.Context, f identity.AssociationFilter) ([]identity.Association, error) {
	q := `SELECT ` + assocColumns + ` FROM associations WHERE cluster = ? AND id > ?`
	args := []any{f.Cluster, f.AfterID}
	if f.Namespace != "" {
		q += ` AND namespace = ?`
		args = append(args, f.Namespace)
	}
	if f.ServiceAccount != "" {
		q += ` AND service_account = ?`
		args = append(args, f.ServiceAccount)
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit(f.Limit))

	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list associations of cluster %q: %w", f.Cluster, err)
	}
	defer rows.Close()
	var out []identity.Association
	for rows.Next() {
		a, err := scanAssociation(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list associations of cluster %q: %w", f.Cluster, err)
		}
		out = append(out, *a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list associations of cluster %q: %w", f.Cluster, err)
	}
	return out, nil
}

// limit maps "no limit" to SQLite's LIMIT -1.
func limit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// AppendAudit inserts e and sets e.ID to its ledger position.
func (s *Store) AppendAudit(ctx context.Context, e *identity.AuditEvent) error {
	res, err := s.appendAudit.ExecContext(ctx, toDB(e.Time), e.Cluster, e.Namespace, e.ServiceAccount,
		e.PodName, e.PodUID, e.NodeName, e.AssociationID, e.RoleARN, e.Outcome, e.ErrorType,
		e.Message, e.STSRequestID)
	if err != nil {
		return fmt.Errorf("sqlite: append audit event: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("sqlite: append audit event: %w", err)
	}
	e.ID = id
	return nil
}

// ListAudit returns audit events newest first, before f.BeforeID when it is
// positive, optionally for one cluster, at most f.Limit of them (all when
// f.Limit <= 0).
func (s *Store) ListAudit(ctx context.Context, f identity.AuditFilter) ([]identity.AuditEvent, error) {
	q := `SELECT ` + auditColumns + ` FROM audit WHERE 1 = 1`
	var args []any
	if f.Cluster != "" {
		q += ` AND cluster = ?`
		args = append(args, f.Cluster)
	}
	if f.BeforeID > 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit(f.Limit))

	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var out []identity.AuditEvent
	for rows.Next() {
		var (
			e  identity.AuditEvent
			ts int64
		)
		if err := rows.Scan(&e.ID, &ts, &e.Cluster, &e.Namespace, &e.ServiceAccount, &e.PodName,
			&e.PodUID, &e.NodeName, &e.AssociationID, &e.RoleARN, &e.Outcome, &e.ErrorType,
			&e.Message, &e.STSRequestID); err != nil {
			return nil, fmt.Errorf("sqlite: list audit: %w", err)
		}
		e.Time = fromDB(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return out, nil
}
