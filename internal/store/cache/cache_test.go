package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/cache"
	"github.com/podid/podid/internal/store/sqlite"
	"github.com/podid/podid/internal/store/storetest"
)

// runningStore is a cache.Store whose Run goroutine stops on Close.
type runningStore struct {
	*cache.Store
	stop func()
}

func (r *runningStore) Close() error {
	r.stop()
	return r.Store.Close()
}

// wrap caches next and runs the cache until Close or the end of the test.
func wrap(t testing.TB, next identity.Store, o cache.Options) *runningStore {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := cache.New(next, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &runningStore{Store: c, stop: stop}
}

func openSQLite(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestStoreSQLite runs the conformance suite on cached SQLite Stores. The
// suite opens several Stores on one file at once and wants each to see the
// others' writes at once: a Hub ties them together, as one podid process
// with its single Store needs no tie at all.
func TestStoreSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "podid.db")
		hub := cache.NewHub()
		return func(t *testing.T) identity.Store {
			s, err := sqlite.Open(t.Context(), path)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return wrap(t, s, cache.Options{TTL: time.Hour, Feed: hub})
		}
	})
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// counting counts the lookups that reach the backend and can hold one up.
type counting struct {
	identity.Store
	finds, gets atomic.Int64
	// hold, when set, runs inside FindAssociation after the backend
	// answered.
	hold func()
	// fail makes lookups fail as a broken database would.
	fail error
}

func (c *counting) GetCluster(ctx context.Context, name string) (*identity.Cluster, error) {
	c.gets.Add(1)
	if c.fail != nil {
		return nil, c.fail
	}
	return c.Store.GetCluster(ctx, name)
}

func (c *counting) FindAssociation(ctx context.Context, cluster, ns, sa string) (*identity.Association, error) {
	c.finds.Add(1)
	if c.fail != nil {
		return nil, c.fail
	}
	a, err := c.Store.FindAssociation(ctx, cluster, ns, sa)
	if c.hold != nil {
		c.hold()
	}
	return a, err
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fixture is a cluster "prod" with association a-1 for ns/sa, on SQLite,
// behind a counting backend.
func fixture(t *testing.T) (*counting, context.Context) {
	t.Helper()
	ctx := t.Context()
	s := openSQLite(t, filepath.Join(t.TempDir(), "podid.db"))
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://issuer", CreatedAt: t0, ModifiedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAssociation(ctx, assoc("a-1", "ns", "sa")); err != nil {
		t.Fatal(err)
	}
	return &counting{Store: s}, ctx
}

func assoc(id, ns, sa string) *identity.Association {
	return &identity.Association{ID: id, Cluster: "prod", Namespace: ns, ServiceAccount: sa,
		RoleARN: "arn:aws:iam::111122223333:role/" + id, Tags: map[string]string{"team": "a"}, CreatedAt: t0, ModifiedAt: t0}
}

func TestLookupsAreCachedForTTL(t *testing.T) {
	back, ctx := fixture(t)
	clk := &clock{now: t0}
	c := wrap(t, back, cache.Options{TTL: 5 * time.Second, Now: clk.Now})

	for _, tt := range []struct {
		name      string
		lookup    func() error
		calls     *atomic.Int64
		wantFound bool
	}{
		{"FindAssociation found", func() error { _, err := c.FindAssociation(ctx, "prod", "ns", "sa"); return err }, &back.finds, true},
		{"FindAssociation not found", func() error { _, err := c.FindAssociation(ctx, "prod", "ns", "nobody"); return err }, &back.finds, false},
		{"FindAssociation in unknown cluster", func() error { _, err := c.FindAssociation(ctx, "nope", "ns", "sa"); return err }, &back.finds, false},
		{"GetCluster found", func() error { _, err := c.GetCluster(ctx, "prod"); return err }, &back.gets, true},
		{"GetCluster not found", func() error { _, err := c.GetCluster(ctx, "nope"); return err }, &back.gets, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.calls.Load()
			check := func(when string, wantCalls int64) {
				t.Helper()
				err := tt.lookup()
				if tt.wantFound && err != nil {
					t.Fatalf("%s: %v", when, err)
				}
				if !tt.wantFound && !errors.Is(err, identity.ErrNotFound) {
					t.Fatalf("%s: error = %v, want ErrNotFound", when, err)
				}
				if got := tt.calls.Load() - base; got != wantCalls {
					t.Errorf("%s: %d backend lookups, want %d", when, got, wantCalls)
				}
			}
			check("first lookup", 1)
			check("second lookup", 1)
			clk.Add(5*time.Second - time.Nanosecond)
			check("just before the TTL", 1)
			clk.Add(time.Nanosecond)
			check("at the TTL", 2)
			check("after refreshing", 2)
		})
	}
	if st := c.Stats(); st.Hits == 0 || st.Misses == 0 {
		t.Errorf("Stats = %+v, want hits and misses counted", st)
	}
}

func TestFailuresAreNotCached(t *testing.T) {
	back, ctx := fixture(t)
	back.fail = errors.New("connection refused")
	c := wrap(t, back, cache.Options{TTL: time.Hour})
	for range 2 {
		if _, err := c.FindAssociation(ctx, "prod", "ns", "sa"); !errors.Is(err, back.fail) {
			t.Fatalf("FindAssociation error = %v, want the backend's", err)
		}
		if _, err := c.GetCluster(ctx, "prod"); !errors.Is(err, back.fail) {
			t.Fatalf("GetCluster error = %v, want the backend's", err)
		}
	}
	if back.finds.Load() != 2 || back.gets.Load() != 2 {
		t.Errorf("backend lookups = %d finds, %d gets; want 2 and 2", back.finds.Load(), back.gets.Load())
	}
}

func TestCallersGetCopies(t *testing.T) {
	back, ctx := fixture(t)
	c := wrap(t, back, cache.Options{TTL: time.Hour})
	for range 2 {
		a, err := c.FindAssociation(ctx, "prod", "ns", "sa")
		if err != nil {
			t.Fatal(err)
		}
		if a.RoleARN != assoc("a-1", "", "").RoleARN || a.Tags["team"] != "a" {
			t.Fatalf("FindAssociation returned a modified association: %+v", a)
		}
		a.RoleARN = "changed by the caller"
		a.Tags["team"] = "changed by the caller"
		cl, err := c.GetCluster(ctx, "prod")
		if err != nil {
			t.Fatal(err)
		}
		if cl.Issuer != "https://issuer" {
			t.Fatalf("GetCluster returned a modified cluster: %+v", cl)
		}
		cl.Issuer = "changed by the caller"
	}
}

// TestOwnWritesInvalidate writes through the cache, with a TTL that never
// runs out, and expects every lookup to see the write at once.
func TestOwnWritesInvalidate(t *testing.T) {
	type lookup struct {
		ns, sa string
		want   string // role ARN, or "" for not found
	}
	for _, tt := range []struct {
		name  string
		write func(ctx context.Context, s identity.Store) error
		after []lookup
	}{
		{"create over a cached not-found", func(ctx context.Context, s identity.Store) error {
			return s.CreateAssociation(ctx, assoc("a-2", "ns", "new"))
		}, []lookup{{"ns", "new", assoc("a-2", "", "").RoleARN}}},
		{"update in place", func(ctx context.Context, s identity.Store) error {
			a := assoc("a-1", "ns", "sa")
			a.RoleARN = "arn:aws:iam::111122223333:role/updated"
			return s.UpdateAssociation(ctx, a)
		}, []lookup{{"ns", "sa", "arn:aws:iam::111122223333:role/updated"}}},
		{"move to another service account", func(ctx context.Context, s identity.Store) error {
			return s.UpdateAssociation(ctx, assoc("a-1", "ns", "new"))
		}, []lookup{{"ns", "sa", ""}, {"ns", "new", assoc("a-1", "", "").RoleARN}}},
		{"delete", func(ctx context.Context, s identity.Store) error {
			return s.DeleteAssociation(ctx, "prod", "a-1")
		}, []lookup{{"ns", "sa", ""}}},
		{"delete the cluster", func(ctx context.Context, s identity.Store) error {
			return s.DeleteCluster(ctx, "prod")
		}, []lookup{{"ns", "sa", ""}}},
		{"delete and recreate the cluster", func(ctx context.Context, s identity.Store) error {
			if err := s.DeleteCluster(ctx, "prod"); err != nil {
				return err
			}
			if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://issuer"}); err != nil {
				return err
			}
			return s.CreateAssociation(ctx, assoc("a-9", "ns", "sa"))
		}, []lookup{{"ns", "sa", assoc("a-9", "", "").RoleARN}, {"ns", "new", ""}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			back, ctx := fixture(t)
			c := wrap(t, back, cache.Options{TTL: time.Hour})
			// Warm every key the test looks at, found or not.
			for _, l := range tt.after {
				_, _ = c.FindAssociation(ctx, "prod", l.ns, l.sa)
			}
			_, _ = c.FindAssociation(ctx, "prod", "ns", "sa")
			if err := tt.write(ctx, c); err != nil {
				t.Fatalf("write: %v", err)
			}
			for _, l := range tt.after {
				a, err := c.FindAssociation(ctx, "prod", l.ns, l.sa)
				switch {
				case l.want == "" && !errors.Is(err, identity.ErrNotFound):
					t.Errorf("FindAssociation(%s/%s) = %v, %v; want ErrNotFound", l.ns, l.sa, a, err)
				case l.want != "" && (err != nil || a.RoleARN != l.want):
					t.Errorf("FindAssociation(%s/%s) = %v, %v; want role %s", l.ns, l.sa, a, err, l.want)
				}
			}
		})
	}

	t.Run("update cluster", func(t *testing.T) {
		back, ctx := fixture(t)
		c := wrap(t, back, cache.Options{TTL: time.Hour})
		if _, err := c.GetCluster(ctx, "prod"); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://new"}); err != nil {
			t.Fatal(err)
		}
		got, err := c.GetCluster(ctx, "prod")
		if err != nil || got.Issuer != "https://new" {
			t.Errorf("GetCluster after UpdateCluster = %+v, %v; want issuer https://new", got, err)
		}
	})
}

// TestAnswerReadBeforeAChangeIsNotKept holds a lookup between the backend's
// answer and the cache fill while a write goes through: the old answer may
// be returned to that caller, but must not be cached.
func TestAnswerReadBeforeAChangeIsNotKept(t *testing.T) {
	back, ctx := fixture(t)
	c := wrap(t, back, cache.Options{TTL: time.Hour})
	answered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	back.hold = func() {
		once.Do(func() {
			close(answered)
			<-release
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.FindAssociation(ctx, "prod", "ns", "sa")
	}()
	<-answered
	if err := c.DeleteAssociation(ctx, "prod", "a-1"); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-done
	if a, err := c.FindAssociation(ctx, "prod", "ns", "sa"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("FindAssociation after the delete = %+v, %v; want ErrNotFound, not the answer read before it", a, err)
	}
}

func TestSizeIsBounded(t *testing.T) {
	back, ctx := fixture(t)
	clk := &clock{now: t0}
	const max = 50
	c := wrap(t, back, cache.Options{TTL: time.Hour, MaxEntries: max, Now: clk.Now})
	for i := range 10 * max {
		_, _ = c.FindAssociation(ctx, "prod", "ns", fmt.Sprintf("sa-%d", i))
		if n := c.Stats().Entries; n > max {
			t.Fatalf("after %d lookups the cache holds %d results, over its bound of %d", i+1, n, max)
		}
	}
	// Expired results make room first: the fresh ones stay.
	clk.Add(2 * time.Hour)
	for i := range max - 1 {
		_, _ = c.FindAssociation(ctx, "prod", "fresh", fmt.Sprintf("sa-%d", i))
	}
	before := back.finds.Load()
	for i := range max - 1 {
		_, _ = c.FindAssociation(ctx, "prod", "fresh", fmt.Sprintf("sa-%d", i))
	}
	if got := back.finds.Load() - before; got > int64(max/10) {
		t.Errorf("%d of %d fresh results were evicted, want expired results to go first", got, max-1)
	}
}

// manualFeed is a Feed the test drives by hand.
type manualFeed struct {
	mu sync.Mutex
	fn func(cache.Change)
	up chan struct{}
}

func newManualFeed() *manualFeed { return &manualFeed{up: make(chan struct{})} }

func (f *manualFeed) Listen(ctx context.Context, fn func(cache.Change)) error {
	f.mu.Lock()
	f.fn = fn
	f.mu.Unlock()
	close(f.up)
	<-ctx.Done()
	return ctx.Err()
}

func (f *manualFeed) send(c cache.Change) {
	<-f.up
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fn(c)
}

func TestFeedStates(t *testing.T) {
	back, ctx := fixture(t)
	feed := newManualFeed()
	c := wrap(t, back, cache.Options{TTL: time.Hour, Feed: feed})
	find := func() {
		t.Helper()
		if _, err := c.FindAssociation(ctx, "prod", "ns", "sa"); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name      string
		change    *cache.Change
		wantCalls int64 // backend lookups for two lookups
	}{
		{"before the feed listens nothing is cached", nil, 2},
		{"once it listens lookups are cached", &cache.Change{Kind: cache.KindAll}, 1},
		{"an unrelated change keeps the entry", &cache.Change{Kind: cache.KindAssociation, Cluster: "prod", Namespace: "ns", ServiceAccount: "other", ID: "a-7"}, 0},
		{"another cluster's change keeps the entry", &cache.Change{Kind: cache.KindCluster, Cluster: "dev"}, 0},
		{"a change of the key drops it", &cache.Change{Kind: cache.KindAssociation, Cluster: "prod", Namespace: "ns", ServiceAccount: "sa"}, 1},
		{"a change of the ID drops it", &cache.Change{Kind: cache.KindAssociation, Cluster: "prod", ID: "a-1"}, 1},
		{"a change of the cluster drops it", &cache.Change{Kind: cache.KindCluster, Cluster: "prod"}, 1},
		{"a flush drops it", &cache.Change{Kind: cache.KindAll}, 1},
		{"a lost feed flushes and stops caching", &cache.Change{Kind: cache.KindLost, Err: errors.New("gone")}, 2},
		{"still lost", nil, 2},
		{"back: caching again", &cache.Change{Kind: cache.KindAll}, 1},
	}
	for _, st := range steps {
		if st.change != nil {
			feed.send(*st.change)
		}
		before := back.finds.Load()
		find()
		find()
		if got := back.finds.Load() - before; got != st.wantCalls {
			t.Errorf("%s: %d backend lookups for two lookups, want %d", st.name, got, st.wantCalls)
		}
	}
}

func TestHubSharesWrites(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "podid.db")
	hub := cache.NewHub()
	a := wrap(t, openSQLite(t, path), cache.Options{TTL: time.Hour, Feed: hub})
	b := wrap(t, openSQLite(t, path), cache.Options{TTL: time.Hour, Feed: hub})
	if err := a.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}
	// Sync is immediate with a Hub; it must not block.
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.FindAssociation(ctx, "prod", "ns", "sa"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("FindAssociation = %v, want ErrNotFound", err)
	}
	// b's cached not-found must not survive a's create, however long the TTL.
	want := assoc("a-1", "ns", "sa")
	if err := a.CreateAssociation(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := b.FindAssociation(ctx, "prod", "ns", "sa")
	if err != nil {
		t.Fatalf("FindAssociation through b after a created it: %v", err)
	}
	if diff := cmp.Diff(want.RoleARN, got.RoleARN); diff != "" {
		t.Errorf("role (-want +got):\n%s", diff)
	}
	if err := a.DeleteAssociation(ctx, "prod", "a-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.FindAssociation(ctx, "prod", "ns", "sa"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("FindAssociation through b after a deleted it = %v, want ErrNotFound", err)
	}
}
