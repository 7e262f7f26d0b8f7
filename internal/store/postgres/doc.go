// Package postgres is the PostgreSQL backend of identity.Store, on pgx v5
// with a connection pool. Several podid replicas can share one database:
// uniqueness of cluster names, association IDs and (cluster, namespace,
// service account) is enforced by the database, not by one process.
//
// # Pointing podid at PostgreSQL
//
// Create a role and a UTF8 database it owns, then give the server its URL:
//
//	CREATE ROLE podid LOGIN PASSWORD '…';
//	CREATE DATABASE podid OWNER podid ENCODING 'UTF8' TEMPLATE template0;
//
//	podid server --store 'postgres://podid:PASSWORD@db.example.com:5432/podid?sslmode=verify-full'
//
// postgresql:// works too. The URL is handed to pgx unchanged, so every
// libpq URL parameter pgx knows applies (sslmode, sslrootcert,
// connect_timeout, application_name, search_path, …), plus the pool's own:
// pool_max_conns (default: the larger of 4 and the number of CPUs),
// pool_min_conns, pool_max_conn_lifetime, pool_max_conn_idle_time. The
// password may also come from PGPASSWORD or a ~/.pgpass file instead of
// the URL; either way it never appears in an error or a log line. Behind
// PgBouncer in transaction mode older than 1.21, add
// default_query_exec_mode=exec, since pgx otherwise caches prepared
// statements per connection.
//
// The role needs CREATE on the schema the tables go into (public, unless
// search_path says otherwise) the first time podid starts and whenever an
// upgrade brings a new schema version; owning the database is simplest.
//
// # Schema and migrations
//
// The schema has the same versions, with the same meaning, as the SQLite
// backend's; a schema_version table holds the current one. Open applies
// the missing forward steps, each in its own transaction that first takes
// a transaction-scoped pg_advisory_xact_lock, so replicas started together
// migrate exactly once and a failed step leaves the previous version
// intact. A database written by a newer podid is refused with
// ErrSchemaTooNew; so is a database whose encoding is not UTF8.
//
// Times are bigint unix nanoseconds in UTC, as in SQLite, and come back
// with full nanosecond precision; the zero time.Time is stored as 0. Tags
// and key sources are JSON text; an empty or nil tag map is stored as NULL
// and comes back as nil. Key columns use the "C" collation, so listings
// order byte by byte, as Go compares strings, whatever the database locale.
// Audit IDs come from an identity column: they increase across replicas and
// restarts.
//
// # Change notifications
//
// Schema version 2 adds triggers that announce every committed change to
// clusters and associations on the podid_changes channel (NOTIFY), with a
// JSON payload naming what changed. Store.Listen follows them on one
// connection of its own, outside the pool, reconnecting with backoff, and
// implements cache.Feed, so each replica's lookup cache drops what another
// replica's write made stale; see package cache. LISTEN needs a session:
// behind a pooler in transaction mode it cannot work, so point podid at
// PostgreSQL itself or a session-mode pool, or run with --cache-ttl 0. The
// listener's application_name ends in "podid-listener".
//
// Cluster key sources may hold an API server bearer token: restrict who can
// read the clusters table, and use TLS (sslmode=verify-full) to reach the
// server.
//
// # Tests
//
// The tests need a server: `eval "$(scripts/postgres-test.sh)"` starts a
// throwaway one and sets PODID_TEST_POSTGRES; see package pgtest.
package postgres
