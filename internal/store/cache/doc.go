// Package cache keeps the lookups of the credential hot path in memory, per
// podid server replica, and drops them when any replica writes.
//
// AssumeRoleForPodIdentity calls GetCluster and FindAssociation on every
// credential request. Store wraps any identity.Store and answers those two
// from memory, found and not found alike; every other method goes to the
// backend. Writes through the Store drop what they make stale at once.
//
// # Writes by other replicas
//
// Several replicas share one PostgreSQL database, so each must learn of the
// others' writes. A Feed delivers them as Changes: the PostgreSQL backend's
// Listen holds a LISTEN connection on which triggers (schema version 2)
// announce every committed change to clusters and associations, whoever
// made it: a replica, a cascade, an operator in psql. A change names the
// association's cluster, namespace, service account and ID (an update
// announces its old and new keys), or a whole cluster when one statement
// touched more than 100 rows. PostgreSQL delivers notifications in commit
// order and only for committed transactions.
//
// Changes can be missed while the LISTEN connection is down, so the feed
// reports KindLost when it drops and KindAll when it is back: the Store
// flushes on both, and caches nothing in between (lookups go to the
// database). Before the feed first listens, nothing is cached either.
//
// A lookup that read the database before a change and finishes after the
// Store applied it must not cache what it read: every invalidation bumps a
// generation number, and a lookup keeps its answer only if the number is
// the one it saw before asking the database.
//
// # Bounds
//
// Staleness after a write through this Store: none. After a write through
// another replica: the notification's delay, about 0.15 ms at the median on
// loopback (docs/benchmarks.md), plus the time the other replica's
// transaction takes to commit. In any case at most the TTL (DefaultTTL,
// 5 s): the TTL is the bound when a change is never announced, for example
// a write to a SQLite file by another process, or a feed that is not
// PostgreSQL's. Memory: at most MaxEntries results; when full, expired
// results go first, then everything.
//
// SQLite has no notification channel. One podid server is the only writer
// of its SQLite file, so its own writes are all there is to see; a Hub ties
// several Stores in one process together, as the tests do.
package cache
