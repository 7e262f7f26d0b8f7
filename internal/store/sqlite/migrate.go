package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrSchemaTooNew is returned by Open when the database was written by a
// newer podid whose schema this build does not know. Opening it anyway could
// silently drop data the newer code relies on, so it is refused.
var ErrSchemaTooNew = errors.New("database schema is newer than this podid")

// migrations are the forward schema steps. Step i moves the schema from
// version i to version i+1, so the latest version is len(migrations). Steps
// are append-only: once released, a step is never edited, only followed by
// another one.
//
// Times are INTEGER unix nanoseconds in UTC (0 stands for the zero
// time.Time). Tags and key sources are JSON text.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE clusters (
	name        TEXT    NOT NULL PRIMARY KEY,
	issuer      TEXT    NOT NULL,
	key_source  TEXT    NOT NULL,
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL
) STRICT;

CREATE TABLE associations (
	id                   TEXT    NOT NULL PRIMARY KEY,
	cluster              TEXT    NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
	namespace            TEXT    NOT NULL,
	service_account      TEXT    NOT NULL,
	role_arn             TEXT    NOT NULL,
	target_role_arn      TEXT    NOT NULL DEFAULT '',
	disable_session_tags INTEGER NOT NULL DEFAULT 0,
	policy               TEXT    NOT NULL DEFAULT '',
	external_id          TEXT    NOT NULL DEFAULT '',
	tags                 TEXT,
	owner_arn            TEXT    NOT NULL DEFAULT '',
	client_request_token TEXT    NOT NULL DEFAULT '',
	created_at           INTEGER NOT NULL,
	modified_at          INTEGER NOT NULL,
	UNIQUE (cluster, namespace, service_account)
) STRICT;

-- Listing pages through one cluster in id order.
CREATE INDEX associations_cluster_id ON associations (cluster, id);
-- Idempotent creates look up the client request token.
CREATE INDEX associations_cluster_request_token ON associations (cluster, client_request_token);

CREATE TABLE audit (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	time            INTEGER NOT NULL,
	cluster         TEXT    NOT NULL DEFAULT '',
	namespace       TEXT    NOT NULL DEFAULT '',
	service_account TEXT    NOT NULL DEFAULT '',
	pod_name        TEXT    NOT NULL DEFAULT '',
	pod_uid         TEXT    NOT NULL DEFAULT '',
	node_name       TEXT    NOT NULL DEFAULT '',
	association_id  TEXT    NOT NULL DEFAULT '',
	role_arn        TEXT    NOT NULL DEFAULT '',
	outcome         TEXT    NOT NULL DEFAULT '',
	error_type      TEXT    NOT NULL DEFAULT '',
	message         TEXT    NOT NULL DEFAULT '',
	sts_request_id  TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The audit ledger is paged newest first, optionally for one cluster.
CREATE INDEX audit_cluster_id ON audit (cluster, id);
`,
	// 2: change notifications. PostgreSQL announces every change to
	// clusters and associations so replicas can drop cached lookups;
	// SQLite has no such channel, and its one server process drops what
	// its own writes make stale (package cache), so the step changes
	// nothing here. It keeps the version numbers of both backends equal.
	`SELECT 1;`,
}

// migrate brings db to len(steps), one transaction per step, so a failed
// step leaves the database at the previous version rather than half
// upgraded. db must begin IMMEDIATE transactions: the version is read and
// bumped under the write lock, so two processes opening the same new file
// cannot both apply a step.
func migrate(ctx context.Context, db *sql.DB, steps []string) error {
	for {
		done, err := migrateStep(ctx, db, steps)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the next pending step, if any, and reports whether
// the schema is already current.
func migrateStep(ctx context.Context, db *sql.DB, steps []string) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil || done {
			// After a successful Commit this is a no-op.
			_ = tx.Rollback()
		}
	}()
	version, err := readVersion(ctx, tx)
	if err != nil {
		return false, err
	}
	switch {
	case version > len(steps):
		return false, fmt.Errorf("%w: the database has schema version %d but this podid knows versions up to %d; upgrade podid, or restore a backup taken before the upgrade",
			ErrSchemaTooNew, version, len(steps))
	case version == len(steps):
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, steps[version]); err != nil {
		return false, fmt.Errorf("migrate schema to version %d: %w", version+1, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, version+1); err != nil {
		return false, fmt.Errorf("record schema version %d: %w", version+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit schema version %d: %w", version+1, err)
	}
	return false, nil
}

// readVersion returns the schema version, creating the version table (at
// version 0) in a database that has none.
func readVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT`); err != nil {
		return 0, fmt.Errorf("create schema_version: %w", err)
	}
	var version int
	err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return 0, fmt.Errorf("initialise schema_version: %w", err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}
