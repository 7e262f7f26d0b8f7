package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSchemaTooNew is returned by Open when the database was written by a
// newer podid whose schema this build does not know. Opening it anyway could
// silently drop data the newer code relies on, so it is refused.
var ErrSchemaTooNew = errors.New("database schema is newer than this podid")

// migrationLock is the pg_advisory_xact_lock key that serialises schema
// migrations. Advisory locks are scoped to one database, so replicas of
// podid on different databases of one server do not wait for each other.
// The value is "podid" in ASCII; any constant would do, as long as it never
// changes.
const migrationLock int64 = 0x706f646964

// migrations are the forward schema steps, with the same version numbers
// and meaning as the SQLite backend's: step i moves the schema from version
// i to version i+1, so the latest version is len(migrations). Steps are
// append-only: once released, a step is never edited, only followed by
// another one.
//
// Times are bigint unix nanoseconds in UTC (0 stands for the zero
// time.Time), as in SQLite, so both backends keep full precision; timestamptz
// would keep only microseconds. Tags and key sources are JSON text rather
// than jsonb: text keeps any string json.Marshal produces (jsonb rejects
// \u0000) and reads back byte for byte.
//
// Key columns use the "C" collation so that ordering and the id > $n paging
// compare bytes, like SQLite and Go, whatever the database's locale.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE clusters (
	name        text   COLLATE "C" NOT NULL PRIMARY KEY,
	issuer      text   NOT NULL,
	key_source  text   NOT NULL,
	created_at  bigint NOT NULL,
	modified_at bigint NOT NULL
);

CREATE TABLE associations (
	id                   text    COLLATE "C" NOT NULL PRIMARY KEY,
	cluster              text    COLLATE "C" NOT NULL REFERENCES clusters (name) ON DELETE CASCADE,
	namespace            text    COLLATE "C" NOT NULL,
	service_account      text    COLLATE "C" NOT NULL,
	role_arn             text    NOT NULL,
	target_role_arn      text    NOT NULL DEFAULT '',
	disable_session_tags boolean NOT NULL DEFAULT false,
	policy               text    NOT NULL DEFAULT '',
	external_id          text    NOT NULL DEFAULT '',
	tags                 text,
	owner_arn            text    NOT NULL DEFAULT '',
	client_request_token text    COLLATE "C" NOT NULL DEFAULT '',
	created_at           bigint  NOT NULL,
	modified_at          bigint  NOT NULL,
	CONSTRAINT associations_identity_key UNIQUE (cluster, namespace, service_account)
);

-- Listing pages through one cluster in id order.
CREATE INDEX associations_cluster_id ON associations (cluster, id);
-- Idempotent creates look up the client request token.
CREATE INDEX associations_cluster_request_token ON associations (cluster, client_request_token);

CREATE TABLE audit (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time            bigint NOT NULL,
	cluster         text   COLLATE "C" NOT NULL DEFAULT '',
	namespace       text   NOT NULL DEFAULT '',
	service_account text   NOT NULL DEFAULT '',
	pod_name        text   NOT NULL DEFAULT '',
	pod_uid         text   NOT NULL DEFAULT '',
	node_name       text   NOT NULL DEFAULT '',
	association_id  text   NOT NULL DEFAULT '',
	role_arn        text   NOT NULL DEFAULT '',
	outcome         text   NOT NULL DEFAULT '',
	error_type      text   NOT NULL DEFAULT '',
	message         text   NOT NULL DEFAULT '',
	sts_request_id  text   NOT NULL DEFAULT ''
);

-- The audit ledger is paged newest first, optionally for one cluster.
CREATE INDEX audit_cluster_id ON audit (cluster, id);
`,
	// 2: announce every committed change to clusters and associations on
	// the podid_changes channel, so that each replica drops the lookups
	// it cached (see Store.Listen and package cache). Triggers, not the
	// Store's own statements, so that cascades and changes made by hand
	// are announced too. NOTIFY is sent at commit, never for a rolled
	// back transaction, and identical payloads of one transaction are
	// sent once.
	`
-- podid_notify_change sends one change. A payload must stay under
-- NOTIFY's 8000 bytes; one that would not is widened to the whole cluster,
-- then to everything, which drops more but never less.
CREATE FUNCTION podid_notify_change(kind text, cluster text, namespace text, service_account text, id text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	payload text := json_build_object('kind', kind, 'cluster', cluster, 'namespace', namespace,
		'serviceAccount', service_account, 'id', id)::text;
BEGIN
	IF octet_length(payload) > 7000 THEN
		payload := json_build_object('kind', 'cluster', 'cluster', cluster)::text;
	END IF;
	IF octet_length(payload) > 7000 THEN
		payload := '{"kind":"all"}';
	END IF;
	PERFORM pg_notify('podid_changes', payload);
END
$$;

-- One statement may touch many associations (a bulk import, the cascade of
-- a cluster delete): past 100 rows, one change per cluster replaces one per
-- row. Only the transition tables a trigger declares may be read, hence
-- the branches.
CREATE FUNCTION podid_associations_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	keys jsonb;
BEGIN
	IF TG_OP = 'INSERT' THEN
		SELECT jsonb_agg(jsonb_build_array(cluster, namespace, service_account, id)) INTO keys FROM new_rows;
	ELSIF TG_OP = 'UPDATE' THEN
		SELECT jsonb_agg(jsonb_build_array(cluster, namespace, service_account, id)) INTO keys
		FROM (SELECT cluster, namespace, service_account, id FROM old_rows
		      UNION SELECT cluster, namespace, service_account, id FROM new_rows) r;
	ELSE
		SELECT jsonb_agg(jsonb_build_array(cluster, namespace, service_account, id)) INTO keys FROM old_rows;
	END IF;
	IF keys IS NULL THEN
		RETURN NULL;
	END IF;
	IF jsonb_array_length(keys) > 100 THEN
		PERFORM podid_notify_change('cluster', c, NULL, NULL, NULL)
		FROM (SELECT DISTINCT k->>0 AS c FROM jsonb_array_elements(keys) k) d;
	ELSE
		PERFORM podid_notify_change('association', k->>0, k->>1, k->>2, k->>3)
		FROM jsonb_array_elements(keys) k;
	END IF;
	RETURN NULL;
END
$$;

CREATE FUNCTION podid_clusters_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM podid_notify_change('cluster', name, NULL, NULL, NULL) FROM new_rows;
	ELSIF TG_OP = 'UPDATE' THEN
		PERFORM podid_notify_change('cluster', name, NULL, NULL, NULL)
		FROM (SELECT name FROM old_rows UNION SELECT name FROM new_rows) r;
	ELSE
		PERFORM podid_notify_change('cluster', name, NULL, NULL, NULL) FROM old_rows;
	END IF;
	RETURN NULL;
END
$$;

CREATE FUNCTION podid_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('podid_changes', '{"kind":"all"}');
	RETURN NULL;
END
$$;

CREATE TRIGGER associations_inserted AFTER INSERT ON associations
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_associations_changed();
CREATE TRIGGER associations_updated AFTER UPDATE ON associations
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_associations_changed();
CREATE TRIGGER associations_deleted AFTER DELETE ON associations
	REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_associations_changed();
CREATE TRIGGER associations_truncated AFTER TRUNCATE ON associations
	FOR EACH STATEMENT EXECUTE FUNCTION podid_truncated();

CREATE TRIGGER clusters_inserted AFTER INSERT ON clusters
	REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_clusters_changed();
CREATE TRIGGER clusters_updated AFTER UPDATE ON clusters
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_clusters_changed();
CREATE TRIGGER clusters_deleted AFTER DELETE ON clusters
	REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION podid_clusters_changed();
CREATE TRIGGER clusters_truncated AFTER TRUNCATE ON clusters
	FOR EACH STATEMENT EXECUTE FUNCTION podid_truncated();
`,
}

// migrate brings the database to len(steps), one transaction per step, so
// a failed step leaves the database at the previous version rather than
// half upgraded (PostgreSQL DDL is transactional). Each transaction first
// takes the migration advisory lock, so replicas starting at once queue and
// each step is applied exactly once; the lock is released with the
// transaction, never left behind on a pooled connection.
func migrate(ctx context.Context, pool *pgxpool.Pool, steps []string) error {
	for {
		done, err := migrateStep(ctx, pool, steps)
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
func migrateStep(ctx context.Context, pool *pgxpool.Pool, steps []string) (done bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin migration: %w", err)
	}
	// After a successful Commit this is a no-op.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return false, fmt.Errorf("take the migration lock: %w", err)
	}
	version, err := readVersion(ctx, tx)
	if err != nil {
		return false, err
	}
	switch {
	case version > len(steps):
		return false, fmt.Errorf("%w: the database has schema version %d but this podid knows versions up to %d; upgrade podid, or restore a backup taken before the upgrade",
			ErrSchemaTooNew, version, len(steps))
	case version == len(steps):
		// Commit rather than roll back: a database that had no version
		// table keeps the one just created, at version 0.
		if err := tx.Commit(ctx); err != nil {
			return false, fmt.Errorf("commit schema version %d: %w", version, err)
		}
		return true, nil
	}
	// Without arguments pgx sends the simple query protocol, which runs a
	// step of several statements in one round trip.
	if _, err := tx.Exec(ctx, steps[version]); err != nil {
		return false, fmt.Errorf("migrate schema to version %d: %w", version+1, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, version+1); err != nil {
		return false, fmt.Errorf("record schema version %d: %w", version+1, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit schema version %d: %w", version+1, err)
	}
	return false, nil
}

// readVersion returns the schema version, creating the version table (at
// version 0) in a database that has none. The caller holds the migration
// lock, so no other podid creates the table at the same time.
func readVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	// Checking first, rather than CREATE TABLE IF NOT EXISTS, lets a role
	// without CREATE privilege open an up-to-date database.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for schema_version: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE TABLE schema_version (version integer NOT NULL)`); err != nil {
			return 0, fmt.Errorf("create schema_version: %w", err)
		}
	}
	var version int
	err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return 0, fmt.Errorf("initialise schema_version: %w", err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}
