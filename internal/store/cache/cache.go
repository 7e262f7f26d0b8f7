package cache

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/podid/podid/internal/identity"
)

// Defaults for Options.
const (
	// DefaultTTL bounds how long a lookup is served from memory, whatever
	// the feed says: it is the staleness bound when a change is never
	// announced (a write to a SQLite file by another process, a lost
	// notification).
	DefaultTTL = 5 * time.Second
	// DefaultMaxEntries bounds memory: a cached association takes about
	// 900 bytes, so a full cache holds under 100 MiB. It is rarely full:
	// only lookups of the last TTL are kept.
	DefaultMaxEntries = 100_000
)

// Options configure a Store.
type Options struct {
	// TTL is how long a lookup result is kept; 0 means DefaultTTL.
	TTL time.Duration
	// MaxEntries bounds the cached results; 0 means DefaultMaxEntries.
	MaxEntries int
	// Feed announces the writes of other Stores on the same database. Nil
	// means this Store is the only writer: its own writes invalidate, and
	// the TTL bounds everything else. If Feed is also a Publisher, the
	// Store publishes its own writes to it.
	Feed Feed
	// Logger gets the feed's state changes; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is an identity.Store that caches GetCluster and FindAssociation,
// found or not found, in front of another Store. Every other method goes
// straight through; writes also drop what they make stale. It is safe for
// concurrent use.
type Store struct {
	next   identity.Store
	ttl    time.Duration
	max    int
	feed   Feed
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time
	hits   atomic.Uint64
	misses atomic.Uint64

	mu       sync.RWMutex
	clusters map[string]*clusterEntry
	n        int // results held, cluster and association ones
	// gen changes on every invalidation. A lookup remembers it before
	// asking the database and keeps the answer only if it is unchanged:
	// an answer read before a change must not land in the cache after
	// the change dropped the old one.
	gen uint64
	// live is whether results may be cached: always without a feed; with
	// one, only between its KindAll and the next KindLost, since a feed
	// that is down may be missing changes.
	live bool
	lost bool // the feed has been lost since its last KindAll
}

// clusterEntry holds the cached results of one cluster name.
type clusterEntry struct {
	cluster *result[identity.Cluster]
	assoc   map[assocKey]*result[identity.Association]
	// byID finds the cached result of an association by its ID, for
	// changes that name the ID but not the namespace and service account
	// it had before.
	byID map[string]assocKey
}

type assocKey struct{ namespace, serviceAccount string }

// result is one cached answer: a value, or the ErrNotFound the backend
// returned.
type result[T any] struct {
	v       *T
	err     error
	expires time.Time
}

var _ identity.Store = (*Store)(nil)

// New returns a Store caching lookups of next. With a Feed, nothing is
// cached until Run is running and the feed is listening.
func New(next identity.Store, o Options) *Store {
	s := &Store{
		next:     next,
		ttl:      o.TTL,
		max:      o.MaxEntries,
		feed:     o.Feed,
		log:      o.Logger,
		now:      o.Now,
		clusters: make(map[string]*clusterEntry),
		live:     o.Feed == nil,
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	if s.max <= 0 {
		s.max = DefaultMaxEntries
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.pub, _ = o.Feed.(Publisher)
	return s
}

// Run follows the feed until ctx is done, then stops caching. Without a
// feed it only waits for ctx. Call it once.
func (s *Store) Run(ctx context.Context) error {
	if s.feed == nil {
		<-ctx.Done()
		return nil
	}
	err := s.feed.Listen(ctx, s.apply)
	s.mu.Lock()
	s.live = false
	s.flushLocked()
	s.mu.Unlock()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Sync waits until every change committed before the call has reached the
// cache, when the feed can tell; otherwise it returns at once.
func (s *Store) Sync(ctx context.Context) error {
	if y, ok := s.feed.(Syncer); ok {
		return y.Sync(ctx)
	}
	return nil
}

// Stats counts lookups answered from memory (Hits) and from the backend
// (Misses).
type Stats struct {
	Hits, Misses uint64
	Entries      int
}

// Stats returns the lookup counts so far.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	n := s.n
	s.mu.RUnlock()
	return Stats{Hits: s.hits.Load(), Misses: s.misses.Load(), Entries: n}
}

// apply drops what a change makes stale.
func (s *Store) apply(c Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c.Kind {
	case KindCluster:
		s.dropClusterLocked(c.Cluster)
	case KindAssociation:
		s.dropAssocLocked(c.Cluster, c.Namespace, c.ServiceAccount, c.ID)
	case KindLost:
		s.flushLocked()
		s.live = false
		if !s.lost {
			s.log.Warn("store change feed lost; lookups go to the database until it is back", "error", c.Err)
		}
		s.lost = true
	default: // KindAll, and any kind this build does not know
		s.flushLocked()
		s.live = true
		if s.lost {
			s.log.Info("store change feed is back; lookup cache flushed")
		}
		s.lost = false
	}
}

// changed drops what this Store's own write made stale and tells the other
// Stores of the feed, if it takes publications.
func (s *Store) changed(c Change) {
	s.apply(c)
	if s.pub != nil {
		s.pub.Publish(c)
	}
}

func (s *Store) flushLocked() {
	s.gen++
	clear(s.clusters)
	s.n = 0
}

func (s *Store) dropClusterLocked(name string) {
	s.gen++
	ce := s.clusters[name]
	if ce == nil {
		return
	}
	s.n -= len(ce.assoc)
	if ce.cluster != nil {
		s.n--
	}
	delete(s.clusters, name)
}

func (s *Store) dropAssocLocked(cluster, namespace, serviceAccount, id string) {
	s.gen++
	ce := s.clusters[cluster]
	if ce == nil {
		return
	}
	if k, ok := ce.byID[id]; ok {
		s.dropKeyLocked(ce, k)
	}
	s.dropKeyLocked(ce, assocKey{namespace, serviceAccount})
}

func (s *Store) dropKeyLocked(ce *clusterEntry, k assocKey) {
	r, ok := ce.assoc[k]
	if !ok {
		return
	}
	if r.v != nil && ce.byID[r.v.ID] == k {
		delete(ce.byID, r.v.ID)
	}
	delete(ce.assoc, k)
	s.n--
}

// makeRoomLocked keeps the cache under its bound before an insert: it drops
// expired results and, if that frees less than a tenth, everything. A full
// flush costs one database lookup per hot key, which is cheaper than
// tracking recency on every hit.
func (s *Store) makeRoomLocked(now time.Time) {
	if s.n < s.max {
		return
	}
	for name, ce := range s.clusters {
		if ce.cluster != nil && !now.Before(ce.cluster.expires) {
			ce.cluster = nil
			s.n--
		}
		for k, r := range ce.assoc {
			if !now.Before(r.expires) {
				s.dropKeyLocked(ce, k)
			}
		}
		if ce.cluster == nil && len(ce.assoc) == 0 {
			delete(s.clusters, name)
		}
	}
	if s.n > s.max-s.max/10 {
		clear(s.clusters)
		s.n = 0
	}
}

func (s *Store) entryLocked(cluster string) *clusterEntry {
	ce := s.clusters[cluster]
	if ce == nil {
		ce = &clusterEntry{
			assoc: make(map[assocKey]*result[identity.Association]),
			byID:  make(map[string]assocKey),
		}
		s.clusters[cluster] = ce
	}
	return ce
}

// cacheable reports whether a backend answer may be kept: a value or a
// not-found, never a failure.
func cacheable(err error) bool {
	return err == nil || errors.Is(err, identity.ErrNotFound)
}

func cloneCluster(c *identity.Cluster) *identity.Cluster {
	if c == nil {
		return nil
	}
	cp := *c
	return &cp
}

func cloneAssoc(a *identity.Association) *identity.Association {
	if a == nil {
		return nil
	}
	cp := *a
	cp.Tags = maps.Clone(a.Tags)
	return &cp
}

// GetCluster returns the cluster or ErrNotFound, from memory when a
// result younger than the TTL is there.
func (s *Store) GetCluster(ctx context.Context, name string) (*identity.Cluster, error) {
	now := s.now()
	s.mu.RLock()
	if ce := s.clusters[name]; ce != nil && ce.cluster != nil && now.Before(ce.cluster.expires) {
		r := ce.cluster
		s.mu.RUnlock()
		s.hits.Add(1)
		// Callers may modify what they get; the cache keeps its own copy.
		return cloneCluster(r.v), r.err
	}
	gen, live := s.gen, s.live
	s.mu.RUnlock()
	s.misses.Add(1)

	c, err := s.next.GetCluster(ctx, name)
	if live && cacheable(err) {
		s.mu.Lock()
		if s.gen == gen && s.live {
			s.makeRoomLocked(now)
			ce := s.entryLocked(name)
			if ce.cluster == nil {
				s.n++
			}
			ce.cluster = &result[identity.Cluster]{v: cloneCluster(c), err: err, expires: now.Add(s.ttl)}
		}
		s.mu.Unlock()
	}
	return c, err
}

// FindAssociation returns the association for the namespace and service
// account, or ErrNotFound, from memory when a result younger than the TTL
// is there.
func (s *Store) FindAssociation(ctx context.Context, cluster, namespace, serviceAccount string) (*identity.Association, error) {
	k := assocKey{namespace, serviceAccount}
	now := s.now()
	s.mu.RLock()
	if ce := s.clusters[cluster]; ce != nil {
		if r, ok := ce.assoc[k]; ok && now.Before(r.expires) {
			s.mu.RUnlock()
			s.hits.Add(1)
			return cloneAssoc(r.v), r.err
		}
	}
	gen, live := s.gen, s.live
	s.mu.RUnlock()
	s.misses.Add(1)

	a, err := s.next.FindAssociation(ctx, cluster, namespace, serviceAccount)
	if live && cacheable(err) {
		s.mu.Lock()
		if s.gen == gen && s.live {
			s.makeRoomLocked(now)
			ce := s.entryLocked(cluster)
			s.dropKeyLocked(ce, k)
			if a != nil {
				// One ID cannot be at two keys: an entry left under
				// another key is stale.
				if old, ok := ce.byID[a.ID]; ok {
					s.dropKeyLocked(ce, old)
				}
				ce.byID[a.ID] = k
			}
			ce.assoc[k] = &result[identity.Association]{v: cloneAssoc(a), err: err, expires: now.Add(s.ttl)}
			s.n++
		}
		s.mu.Unlock()
	}
	return a, err
}

// CreateCluster creates c and drops any cached not-found for its name.
func (s *Store) CreateCluster(ctx context.Context, c *identity.Cluster) error {
	err := s.next.CreateCluster(ctx, c)
	// Also on error: a write whose answer was lost may have committed.
	s.changed(Change{Kind: KindCluster, Cluster: c.Name})
	return err
}

// UpdateCluster updates c and drops its cached result.
func (s *Store) UpdateCluster(ctx context.Context, c *identity.Cluster) error {
	err := s.next.UpdateCluster(ctx, c)
	s.changed(Change{Kind: KindCluster, Cluster: c.Name})
	return err
}

// DeleteCluster deletes the cluster and drops everything cached under it.
func (s *Store) DeleteCluster(ctx context.Context, name string) error {
	err := s.next.DeleteCluster(ctx, name)
	s.changed(Change{Kind: KindCluster, Cluster: name})
	return err
}

// CreateAssociation creates a and drops any cached not-found for its
// namespace and service account.
func (s *Store) CreateAssociation(ctx context.Context, a *identity.Association) error {
	err := s.next.CreateAssociation(ctx, a)
	s.changed(Change{Kind: KindAssociation, Cluster: a.Cluster, Namespace: a.Namespace, ServiceAccount: a.ServiceAccount, ID: a.ID})
	return err
}

// UpdateAssociation updates a and drops the cached results for its old and
// new namespace and service account.
func (s *Store) UpdateAssociation(ctx context.Context, a *identity.Association) error {
	err := s.next.UpdateAssociation(ctx, a)
	s.changed(Change{Kind: KindAssociation, Cluster: a.Cluster, Namespace: a.Namespace, ServiceAccount: a.ServiceAccount, ID: a.ID})
	return err
}

// DeleteAssociation deletes the association and drops its cached result.
func (s *Store) DeleteAssociation(ctx context.Context, cluster, id string) error {
	err := s.next.DeleteAssociation(ctx, cluster, id)
	s.changed(Change{Kind: KindAssociation, Cluster: cluster, ID: id})
	return err
}

// ListClusters is not cached.
func (s *Store) ListClusters(ctx context.Context) ([]identity.Cluster, error) {
	return s.next.ListClusters(ctx)
}

// GetAssociation is not cached: it serves the API, not the credential path.
func (s *Store) GetAssociation(ctx context.Context, cluster, id string) (*identity.Association, error) {
	return s.next.GetAssociation(ctx, cluster, id)
}

// FindAssociationByRequestToken is not cached: idempotent creates must see
// the database.
func (s *Store) FindAssociationByRequestToken(ctx context.Context, cluster, token string) (*identity.Association, error) {
	return s.next.FindAssociationByRequestToken(ctx, cluster, token)
}

// ListAssociations is not cached.
func (s *Store) ListAssociations(ctx context.Context, f identity.AssociationFilter) ([]identity.Association, error) {
	return s.next.ListAssociations(ctx, f)
}

// AppendAudit goes straight to the backend.
func (s *Store) AppendAudit(ctx context.Context, e *identity.AuditEvent) error {
	return s.next.AppendAudit(ctx, e)
}

// ListAudit goes straight to the backend.
func (s *Store) ListAudit(ctx context.Context, f identity.AuditFilter) ([]identity.AuditEvent, error) {
	return s.next.ListAudit(ctx, f)
}

// Close closes the backend Store. Stop Run first.
func (s *Store) Close() error {
	return s.next.Close()
}
