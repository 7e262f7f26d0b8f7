package cache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/cache"
	"github.com/podid/podid/internal/store/postgres"
	"github.com/podid/podid/internal/store/postgres/pgtest"
	"github.com/podid/podid/internal/store/storetest"
)

func openPostgres(t testing.TB, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// replica is a cached PostgreSQL Store following its own LISTEN feed, as
// one podid server replica runs it.
func replica(t testing.TB, url string, ttl time.Duration) *runningStore {
	t.Helper()
	pg := openPostgres(t, url)
	return wrap(t, pg, cache.Options{TTL: ttl, Feed: pg})
}

// syncedStore waits for its feed to catch up before every cached lookup.
// The conformance suite expects a Store to see another's write the moment
// the write returns; replicas see it within the feed's delay instead
// (TestReplicasPostgres measures it). Sync closes that gap, so the suite
// checks what the cache returns once the feed has delivered, through the
// real LISTEN path.
type syncedStore struct{ *runningStore }

func (s syncedStore) GetCluster(ctx context.Context, name string) (*identity.Cluster, error) {
	if err := s.Sync(ctx); err != nil {
		return nil, err
	}
	return s.runningStore.GetCluster(ctx, name)
}

func (s syncedStore) FindAssociation(ctx context.Context, cluster, ns, sa string) (*identity.Association, error) {
	if err := s.Sync(ctx); err != nil {
		return nil, err
	}
	return s.runningStore.FindAssociation(ctx, cluster, ns, sa)
}

func TestStorePostgres(t *testing.T) {
	pgtest.URL(t)
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		url := pgtest.Fresh(t)
		return func(t *testing.T) identity.Store {
			return syncedStore{replica(t, url, time.Hour)}
		}
	})
}

// waitFor polls until ok holds and returns how long it took, failing the
// test after a generous timeout.
func waitFor(t *testing.T, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Microsecond)
	}
	return time.Since(start)
}

// TestReplicasPostgres has two replicas on one database. Replica 2 keeps an
// association cached with a TTL of an hour, so only a notification can make
// it see replica 1's updates and deletes. The time from the write's return
// on replica 1 to replica 2 answering with it is logged: this is the
// propagation delay recorded in docs/benchmarks.md.
func TestReplicasPostgres(t *testing.T) {
	url := pgtest.Fresh(t)
	ctx := t.Context()
	r1, r2 := replica(t, url, time.Hour), replica(t, url, time.Hour)
	for _, r := range []*runningStore{r1, r2} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := r1.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}
	a := assoc("a-1", "ns", "sa")
	if err := r1.CreateAssociation(ctx, a); err != nil {
		t.Fatal(err)
	}
	role := func() string {
		got, err := r2.FindAssociation(ctx, "prod", "ns", "sa")
		switch {
		case errors.Is(err, identity.ErrNotFound):
			return ""
		case err != nil:
			t.Fatalf("FindAssociation through replica 2: %v", err)
		}
		return got.RoleARN
	}
	waitFor(t, "replica 2 sees the association", func() bool { return role() == a.RoleARN })

	const n = 200
	var delays []time.Duration
	for i := range n {
		// Notifications of the previous change may still be on their way
		// and drop what replica 2 just cached: let them arrive, then
		// cache the current answer.
		if err := r2.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		role()
		before := r2.Stats()
		// Replica 2 answers from memory before the change...
		if role() != a.RoleARN || r2.Stats().Hits != before.Hits+1 {
			t.Fatalf("change %d: replica 2 did not answer from its cache", i)
		}
		var want string
		if i%4 == 3 {
			// ...every fourth change is a delete, then a re-create...
			if err := r1.DeleteAssociation(ctx, "prod", a.ID); err != nil {
				t.Fatal(err)
			}
			want = ""
		} else {
			a.RoleARN = fmt.Sprintf("arn:aws:iam::111122223333:role/r-%d", i)
			if err := r1.UpdateAssociation(ctx, a); err != nil {
				t.Fatal(err)
			}
			want = a.RoleARN
		}
		// ...and sees the change within the feed's delay.
		delays = append(delays, waitFor(t, fmt.Sprintf("change %d reaches replica 2", i), func() bool { return role() == want }))
		if want == "" {
			a.ID = fmt.Sprintf("a-%d", i+2)
			a.RoleARN = "arn:aws:iam::111122223333:role/" + a.ID
			if err := r1.CreateAssociation(ctx, a); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "re-create reaches replica 2", func() bool { return role() == a.RoleARN })
		}
	}
	slices.Sort(delays)
	t.Logf("propagation from replica 1's write to replica 2's answer over %d changes: p50 %v, p90 %v, p99 %v, max %v",
		n, delays[n/2], delays[n*9/10], delays[n*99/100], delays[n-1])
}

// TestListenerLossPostgres kills the replica's LISTEN connection: the
// replica flushes its cache, goes to the database while the feed is down,
// and follows changes again once it is back.
func TestListenerLossPostgres(t *testing.T) {
	url := pgtest.Fresh(t)
	ctx := t.Context()
	pg := openPostgres(t, url)
	r := wrap(t, pg, cache.Options{TTL: time.Hour, Feed: pg})
	writer := openPostgres(t, url)
	if err := writer.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}
	a := assoc("a-1", "ns", "sa")
	if err := writer.CreateAssociation(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.FindAssociation(ctx, "prod", "ns", "sa"); err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().Entries; n != 1 {
		t.Fatalf("cache holds %d results, want 1", n)
	}

	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	pid := pg.ListenerPID()
	var terminated bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, terminated, err)
	}
	waitFor(t, "the cache is flushed after the listener was cut", func() bool { return r.Stats().Entries == 0 })
	waitFor(t, "the listener reconnects", func() bool { return pg.ListenerPID() != pid })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	// Cached again, then changed by another Store: the change must come
	// through the new connection.
	if _, err := r.FindAssociation(ctx, "prod", "ns", "sa"); err != nil {
		t.Fatal(err)
	}
	hits := r.Stats().Hits
	if _, err := r.FindAssociation(ctx, "prod", "ns", "sa"); err != nil || r.Stats().Hits != hits+1 {
		t.Fatalf("after reconnecting the replica does not cache (err %v)", err)
	}
	a.RoleARN = "arn:aws:iam::111122223333:role/after-reconnect"
	if err := writer.UpdateAssociation(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a change after the reconnect reaches the replica", func() bool {
		got, err := r.FindAssociation(ctx, "prod", "ns", "sa")
		return err == nil && got.RoleARN == a.RoleARN
	})
}
