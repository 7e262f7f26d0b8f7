package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/podid/podid/internal/identity"
)

// SQLSTATE codes Open and the Store map to domain errors.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// Store is an identity.Store on one PostgreSQL database. It is safe for
// concurrent use, and several Stores (in one process or many) may share one
// database.
type Store struct {
	pool *pgxpool.Pool
	// target names the database for errors: host, port and database name,
	// never the user's password.
	target string
	// secrets are the URL's passwords, kept to redact listener errors.
	secrets []string

	closeOnce sync.Once

	// listenPID is the backend PID of the Listen connection.
	listenPID atomic.Uint32
	// syncs are the Sync calls waiting for their marker, by token.
	syncMu sync.Mutex
	syncs  map[string]chan struct{}
}

var _ identity.Store = (*Store)(nil)

// Open connects to the database the postgres:// or postgresql:// URL names
// and migrates its schema forward. It refuses, with an error wrapping
// ErrSchemaTooNew, a database written by a newer podid. Errors never
// contain the password of the URL.
func Open(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, migrations)
}

func open(ctx context.Context, connURL string, steps []string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		// pgx redacts passwords from its parse errors only on a best-effort
		// basis, and the underlying net/url error quotes the whole URL.
		return nil, errors.New("postgres: cannot parse the store URL (not repeated here, it may hold a password); want postgres://user:password@host:5432/dbname?sslmode=verify-full")
	}
	secrets := urlSecrets(connURL, cfg.ConnConfig.Password)
	target := describe(cfg.ConnConfig)

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("postgres: %s: %w", target, err), secrets)
	}
	// The first query is also the connectivity check.
	var encoding string
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_encoding')`).Scan(&encoding); err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("postgres: %s: %w", target, err), secrets)
	}
	if encoding != "UTF8" {
		// Another encoding would turn names and tags it cannot represent
		// into errors, or store them mangled.
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: the database encoding is %s, podid needs UTF8; create the database with ENCODING 'UTF8'", target, encoding)
	}
	if err := migrate(ctx, pool, steps); err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("postgres: %s: %w", target, err), secrets)
	}
	return &Store{pool: pool, target: target, secrets: secrets}, nil
}

// describe names the database as host:port/dbname for messages.
func describe(c *pgx.ConnConfig) string {
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))) + "/" + c.Database
}

// urlSecrets returns the passwords a connection URL may carry, as written
// and as they would appear escaped, so that redact can find them in any
// error message.
func urlSecrets(connURL, password string) []string {
	var raw []string
	if password != "" {
		raw = append(raw, password)
	}
	if u, err := url.Parse(connURL); err == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			raw = append(raw, pw)
		}
		for _, k := range []string{"password", "sslpassword"} {
			if v := u.Query().Get(k); v != "" {
				raw = append(raw, v)
			}
		}
	}
	var out []string
	for _, s := range raw {
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("", s).String()[1:])
	}
	return out
}

// redactedError hides secrets from the message of the error it wraps while
// keeping errors.Is and errors.As working on the chain.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact replaces every secret in err's message. pgx keeps passwords out
// of its connect errors; this is the backstop that makes it a guarantee.
func redact(err error, secrets []string) error {
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// Close closes the connection pool, waiting for connections in use to be
// released. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// storable reports whether PostgreSQL text can hold every key: it cannot
// contain NUL and, in a UTF8 database, must be valid UTF-8. No row can be
// keyed by anything else, so lookups answer ErrNotFound without asking the
// server, which would fail the query with an encoding error.
func storable(keys ...string) bool {
	for _, k := range keys {
		if strings.IndexByte(k, 0) >= 0 || !utf8.ValidString(k) {
			return false
		}
	}
	return true
}

func pgCode(err error) (code, constraint string) {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code, e.ConstraintName
	}
	return "", ""
}

func isUnique(err error) bool {
	c, _ := pgCode(err)
	return c == uniqueViolation
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

// encodeTags stores an empty or nil map as NULL, as the SQLite backend does.
func encodeTags(tags map[string]string) (*string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return nil, fmt.Errorf("encode tags: %w", err)
	}
	s := string(b)
	return &s, nil
}

const assocColumns = `id, cluster, namespace, service_account, role_arn, target_role_arn,
	disable_session_tags, policy, external_id, tags, owner_arn, client_request_token,
	created_at, modified_at`

const clusterColumns = `name, issuer, key_source, created_at, modified_at`

const auditColumns = `id, time, cluster, namespace, service_account, pod_name, pod_uid,
	node_name, association_id, role_arn, outcome, error_type, message, sts_request_id`

// CreateCluster inserts c; ErrConflict if the name is taken.
func (s *Store) CreateCluster(ctx context.Context, c *identity.Cluster) error {
	keys, err := json.Marshal(c.Keys)
	if err != nil {
		return fmt.Errorf("postgres: encode key source of cluster %q: %w", c.Name, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO clusters (`+clusterColumns+`) VALUES ($1, $2, $3, $4, $5)`,
		c.Name, c.Issuer, string(keys), toDB(c.CreatedAt), toDB(c.ModifiedAt))
	if isUnique(err) {
		return fmt.Errorf("cluster %q: %w", c.Name, identity.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("postgres: create cluster %q: %w", c.Name, err)
	}
	return nil
}

// UpdateCluster writes every field of c except Name and CreatedAt.
func (s *Store) UpdateCluster(ctx context.Context, c *identity.Cluster) error {
	if !storable(c.Name) {
		return fmt.Errorf("cluster %q: %w", c.Name, identity.ErrNotFound)
	}
	keys, err := json.Marshal(c.Keys)
	if err != nil {
		return fmt.Errorf("postgres: encode key source of cluster %q: %w", c.Name, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE clusters SET issuer = $1, key_source = $2, modified_at = $3 WHERE name = $4`,
		c.Issuer, string(keys), toDB(c.ModifiedAt), c.Name)
	if err != nil {
		return fmt.Errorf("postgres: update cluster %q: %w", c.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("cluster %q: %w", c.Name, identity.ErrNotFound)
	}
	return nil
}

func scanCluster(r pgx.Row) (*identity.Cluster, error) {
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
	if !storable(name) {
		return nil, fmt.Errorf("cluster %q: %w", name, identity.ErrNotFound)
	}
	c, err := scanCluster(s.pool.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("cluster %q: %w", name, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get cluster %q: %w", name, err)
	}
	return c, nil
}

// ListClusters returns every cluster ordered by name, byte by byte.
func (s *Store) ListClusters(ctx context.Context) ([]identity.Cluster, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+clusterColumns+` FROM clusters ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list clusters: %w", err)
	}
	defer rows.Close()
	var out []identity.Cluster
	for rows.Next() {
		c, err := scanCluster(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list clusters: %w", err)
		}
		out = append(out, *c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list clusters: %w", err)
	}
	return out, nil
}

// DeleteCluster removes the cluster; its associations go with it through
// ON DELETE CASCADE. Audit rows are kept: the ledger outlives what it
// records.
func (s *Store) DeleteCluster(ctx context.Context, name string) error {
	if !storable(name) {
		return fmt.Errorf("cluster %q: %w", name, identity.ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM clusters WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("postgres: delete cluster %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
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
		return fmt.Errorf("postgres: association %q: %w", a.ID, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO associations (`+assocColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		a.ID, a.Cluster, a.Namespace, a.ServiceAccount, a.RoleARN, a.TargetRoleARN,
		a.DisableSessionTags, a.Policy, a.ExternalID, tags, a.OwnerARN, a.ClientRequestToken,
		toDB(a.CreatedAt), toDB(a.ModifiedAt))
	if err == nil {
		return nil
	}
	switch code, constraint := pgCode(err); {
	case code == uniqueViolation && constraint == "associations_pkey":
		return fmt.Errorf("association %q: %w", a.ID, identity.ErrConflict)
	case code == uniqueViolation:
		return fmt.Errorf("association for %s/%s in cluster %q: %w", a.Namespace, a.ServiceAccount, a.Cluster, identity.ErrConflict)
	case code == foreignKeyViolation:
		return fmt.Errorf("cluster %q: %w", a.Cluster, identity.ErrNotFound)
	default:
		return fmt.Errorf("postgres: create association %q: %w", a.ID, err)
	}
}

func scanAssociation(r pgx.Row) (*identity.Association, error) {
	var (
		a                 identity.Association
		tags              *string
		created, modified int64
	)
	err := r.Scan(&a.ID, &a.Cluster, &a.Namespace, &a.ServiceAccount, &a.RoleARN, &a.TargetRoleARN,
		&a.DisableSessionTags, &a.Policy, &a.ExternalID, &tags, &a.OwnerARN, &a.ClientRequestToken,
		&created, &modified)
	if err != nil {
		return nil, err
	}
	if tags != nil {
		if err := json.Unmarshal([]byte(*tags), &a.Tags); err != nil {
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
	if !storable(cluster, id) {
		return nil, fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	a, err := scanAssociation(s.pool.QueryRow(ctx, `SELECT `+assocColumns+` FROM associations
		WHERE id = $1 AND cluster = $2`, id, cluster))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get association %q: %w", id, err)
	}
	return a, nil
}

// FindAssociation returns the cluster's association for the namespace and
// service account, or ErrNotFound. It is on the credential hot path: one
// lookup in the UNIQUE index, through a statement pgx prepares once per
// connection.
func (s *Store) FindAssociation(ctx context.Context, cluster, namespace, serviceAccount string) (*identity.Association, error) {
	if !storable(cluster, namespace, serviceAccount) {
		return nil, fmt.Errorf("association for %s/%s in cluster %q: %w", namespace, serviceAccount, cluster, identity.ErrNotFound)
	}
	a, err := scanAssociation(s.pool.QueryRow(ctx, `SELECT `+assocColumns+` FROM associations
		WHERE cluster = $1 AND namespace = $2 AND service_account = $3`, cluster, namespace, serviceAccount))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("association for %s/%s in cluster %q: %w", namespace, serviceAccount, cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find association for %s/%s in cluster %q: %w", namespace, serviceAccount, cluster, err)
	}
	return a, nil
}

// FindAssociationByRequestToken returns the cluster's association created
// with the client request token, or ErrNotFound. An empty token never
// matches. Should several associations share the token, the earliest
// created (then the smallest ID) is returned, as in SQLite.
func (s *Store) FindAssociationByRequestToken(ctx context.Context, cluster, token string) (*identity.Association, error) {
	if token == "" {
		return nil, fmt.Errorf("association with empty request token: %w", identity.ErrNotFound)
	}
	if !storable(cluster, token) {
		return nil, fmt.Errorf("association with request token in cluster %q: %w", cluster, identity.ErrNotFound)
	}
	a, err := scanAssociation(s.pool.QueryRow(ctx, `SELECT `+assocColumns+` FROM associations
		WHERE cluster = $1 AND client_request_token = $2 ORDER BY created_at, id LIMIT 1`, cluster, token))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("association with request token in cluster %q: %w", cluster, identity.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find association by request token in cluster %q: %w", cluster, err)
	}
	return a, nil
}

// UpdateAssociation writes every field of a except ID, Cluster and
// CreatedAt. ErrNotFound if the association is not in the cluster;
// ErrConflict if the new namespace and service account are taken.
func (s *Store) UpdateAssociation(ctx context.Context, a *identity.Association) error {
	if !storable(a.ID, a.Cluster) {
		return fmt.Errorf("association %q in cluster %q: %w", a.ID, a.Cluster, identity.ErrNotFound)
	}
	tags, err := encodeTags(a.Tags)
	if err != nil {
		return fmt.Errorf("postgres: association %q: %w", a.ID, err)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE associations SET
		namespace = $1, service_account = $2, role_arn = $3, target_role_arn = $4,
		disable_session_tags = $5, policy = $6, external_id = $7, tags = $8, owner_arn = $9,
		client_request_token = $10, modified_at = $11
		WHERE id = $12 AND cluster = $13`,
		a.Namespace, a.ServiceAccount, a.RoleARN, a.TargetRoleARN,
		a.DisableSessionTags, a.Policy, a.ExternalID, tags, a.OwnerARN,
		a.ClientRequestToken, toDB(a.ModifiedAt),
		a.ID, a.Cluster)
	if isUnique(err) {
		return fmt.Errorf("association for %s/%s in cluster %q: %w", a.Namespace, a.ServiceAccount, a.Cluster, identity.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("postgres: update association %q: %w", a.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("association %q in cluster %q: %w", a.ID, a.Cluster, identity.ErrNotFound)
	}
	return nil
}

// DeleteAssociation removes the association from the cluster, or returns
// ErrNotFound.
func (s *Store) DeleteAssociation(ctx context.Context, cluster, id string) error {
	if !storable(cluster, id) {
		return fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM associations WHERE id = $1 AND cluster = $2`, id, cluster)
	if err != nil {
		return fmt.Errorf("postgres: delete association %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("association %q in cluster %q: %w", id, cluster, identity.ErrNotFound)
	}
	return nil
}

// query builds a statement with numbered placeholders.
type query struct {
	sql  strings.Builder
	args []any
}

// add appends the SQL fragment, whose one "?" stands for arg.
func (q *query) add(fragment string, arg any) {
	q.args = append(q.args, arg)
	q.sql.WriteString(strings.Replace(fragment, "?", "$"+strconv.Itoa(len(q.args)), 1))
}

// ListAssociations returns the cluster's associations in ID order, after
// f.AfterID, at most f.Limit of them (all when f.Limit <= 0). An unknown
// cluster has no associations; it is not an error.
func (s *Store) ListAssociations(ctx context.Context, f identity.AssociationFilter) ([]identity.Association, error) {
	if !storable(f.Cluster, f.Namespace, f.ServiceAccount) {
		return nil, nil
	}
	// No stored ID holds a NUL, so the IDs after "x\x00…" are exactly those
	// after "x".
	after, _, _ := strings.Cut(f.AfterID, "\x00")
	if !utf8.ValidString(after) {
		return nil, fmt.Errorf("postgres: list associations of cluster %q: the start ID is not valid UTF-8", f.Cluster)
	}
	var q query
	q.sql.WriteString(`SELECT ` + assocColumns + ` FROM associations`)
	q.add(` WHERE cluster = ?`, f.Cluster)
	q.add(` AND id > ?`, after)
	if f.Namespace != "" {
		q.add(` AND namespace = ?`, f.Namespace)
	}
	if f.ServiceAccount != "" {
		q.add(` AND service_account = ?`, f.ServiceAccount)
	}
	q.sql.WriteString(` ORDER BY id`)
	if f.Limit > 0 {
		q.add(` LIMIT ?`, f.Limit)
	}

	rows, err := s.pool.Query(ctx, q.sql.String(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list associations of cluster %q: %w", f.Cluster, err)
	}
	defer rows.Close()
	var out []identity.Association
	for rows.Next() {
		a, err := scanAssociation(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list associations of cluster %q: %w", f.Cluster, err)
		}
		out = append(out, *a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list associations of cluster %q: %w", f.Cluster, err)
	}
	return out, nil
}

// AppendAudit inserts e and sets e.ID to its ledger position. IDs come from
// an identity sequence: they increase in the order events are appended,
// across Stores and restarts, though a concurrent writer's smaller ID may
// become visible a moment after a larger one.
func (s *Store) AppendAudit(ctx context.Context, e *identity.AuditEvent) error {
	err := s.pool.QueryRow(ctx, `INSERT INTO audit (time, cluster, namespace, service_account,
		pod_name, pod_uid, node_name, association_id, role_arn, outcome, error_type,
		message, sts_request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		RETURNING id`,
		toDB(e.Time), e.Cluster, e.Namespace, e.ServiceAccount,
		e.PodName, e.PodUID, e.NodeName, e.AssociationID, e.RoleARN, e.Outcome, e.ErrorType,
		e.Message, e.STSRequestID).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("postgres: append audit event: %w", err)
	}
	return nil
}

// ListAudit returns audit events newest first, before f.BeforeID when it is
// positive, optionally for one cluster, at most f.Limit of them (all when
// f.Limit <= 0).
func (s *Store) ListAudit(ctx context.Context, f identity.AuditFilter) ([]identity.AuditEvent, error) {
	if !storable(f.Cluster) {
		return nil, nil
	}
	var q query
	q.sql.WriteString(`SELECT ` + auditColumns + ` FROM audit WHERE true`)
	if f.Cluster != "" {
		q.add(` AND cluster = ?`, f.Cluster)
	}
	if f.BeforeID > 0 {
		q.add(` AND id < ?`, f.BeforeID)
	}
	q.sql.WriteString(` ORDER BY id DESC`)
	if f.Limit > 0 {
		q.add(` LIMIT ?`, f.Limit)
	}

	rows, err := s.pool.Query(ctx, q.sql.String(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
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
			return nil, fmt.Errorf("postgres: list audit: %w", err)
		}
		e.Time = fromDB(ts)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	return out, nil
}
