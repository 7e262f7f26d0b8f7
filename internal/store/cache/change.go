package cache

import (
	"context"
	"sync"
)

// Kind says what a Change covers.
type Kind uint8

// Change kinds, from the coarsest to the finest.
const (
	// KindAll: anything may have changed. A feed sends it when it starts
	// listening and after every reconnect, since changes made while it
	// was not listening are lost.
	KindAll Kind = iota + 1
	// KindLost: the feed lost its source and may miss changes until its
	// next KindAll. Err says why.
	KindLost
	// KindCluster: the named cluster and anything under it (its
	// associations, by cascade) may have changed.
	KindCluster
	// KindAssociation: the association of the cluster with the ID, and
	// whatever association the cluster has for the namespace and service
	// account, may have changed. Either part may be empty.
	KindAssociation
)

func (k Kind) String() string {
	switch k {
	case KindAll:
		return "all"
	case KindLost:
		return "lost"
	case KindCluster:
		return "cluster"
	case KindAssociation:
		return "association"
	default:
		return "unknown"
	}
}

// Change is one committed write that may make cached lookups stale.
type Change struct {
	Kind           Kind
	Cluster        string
	Namespace      string
	ServiceAccount string
	ID             string
	// Err is why a KindLost feed lost its source.
	Err error
}

// Feed delivers the changes every writer of a store makes, for a Store to
// drop what they make stale.
type Feed interface {
	// Listen calls fn for each change, one at a time and in commit order,
	// until ctx is done, then returns ctx's error. Its first call is
	// KindAll once it is listening; after a KindLost it calls KindAll
	// again when it is back. fn must be quick and must not block.
	Listen(ctx context.Context, fn func(Change)) error
}

// Syncer is a Feed that can wait until every change committed before the
// call has been passed to the listener.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Publisher is a Feed that is told about writes by the Stores that make
// them, rather than learning about them from the database.
type Publisher interface {
	Publish(c Change)
}

// Hub is an in-process Feed and Publisher: a change published by one Store
// reaches every listener before Publish returns. It ties together several
// Stores in one process on one database that cannot announce changes
// itself, as SQLite cannot.
type Hub struct {
	mu   sync.RWMutex
	subs map[*func(Change)]struct{}
}

// NewHub returns a Hub without listeners.
func NewHub() *Hub {
	return &Hub{subs: make(map[*func(Change)]struct{})}
}

var (
	_ Feed      = (*Hub)(nil)
	_ Publisher = (*Hub)(nil)
)

// Listen calls fn with KindAll, then with every published change, until ctx
// is done.
func (h *Hub) Listen(ctx context.Context, fn func(Change)) error {
	key := &fn
	h.mu.Lock()
	h.subs[key] = struct{}{}
	// Under the lock, so that no change published after this one can
	// reach fn first.
	fn(Change{Kind: KindAll})
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	delete(h.subs, key)
	h.mu.Unlock()
	return ctx.Err()
}

// Publish hands c to every listener and returns once they all have it.
func (h *Hub) Publish(c Change) {
	// The write lock also keeps the changes of concurrent publishers in
	// one order for every listener.
	h.mu.Lock()
	defer h.mu.Unlock()
	for fn := range h.subs {
		(*fn)(c)
	}
}
