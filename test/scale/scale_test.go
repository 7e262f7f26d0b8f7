package scale

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/cache"
	"github.com/podid/podid/internal/store/postgres"
	"github.com/podid/podid/internal/store/postgres/pgtest"
	"github.com/podid/podid/internal/store/sqlite"
)

const clusters = 3

func layout(perCluster int) Layout {
	return Layout{Clusters: clusters, PerCluster: perCluster, Issuer: "https://scale.podid.test",
		Keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: `{"keys":[]}`}}
}

// open populates a fresh store of the backend and opens it.
func open(tb testing.TB, backend string, perCluster int) identity.Store {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	var (
		s   identity.Store
		err error
	)
	switch backend {
	case "sqlite":
		path := filepath.Join(tb.TempDir(), "podid.db")
		if err := PopulateSQLite(ctx, path, layout(perCluster)); err != nil {
			tb.Fatalf("populate: %v", err)
		}
		s, err = sqlite.Open(ctx, path)
	case "postgres":
		url := pgtest.Fresh(tb)
		if err := PopulatePostgres(ctx, url, layout(perCluster)); err != nil {
			tb.Fatalf("populate: %v", err)
		}
		s, err = postgres.Open(ctx, url)
	}
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	tb.Logf("%s: %d clusters × %d associations populated in %v", backend, clusters, perCluster, time.Since(start).Round(time.Millisecond))
	return s
}

type key struct {
	cluster, namespace, serviceAccount string
	role                               string
}

// keys are n lookups of existing associations spread at random over every
// cluster and association, so that a benchmark touches the whole index.
func keys(perCluster, n int) []key {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]key, n)
	for j := range out {
		c, i := r.IntN(clusters), r.IntN(perCluster)
		ns, sa := Key(i)
		out[j] = key{ClusterName(c), ns, sa, RoleARN(c, i)}
	}
	return out
}

func TestPopulatedStoresAnswer(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			if backend == "postgres" {
				pgtest.URL(t)
			}
			const per = 250
			s := open(t, backend, per)
			for _, k := range keys(per, 200) {
				a, err := s.FindAssociation(t.Context(), k.cluster, k.namespace, k.serviceAccount)
				if err != nil {
					t.Fatalf("FindAssociation(%s, %s, %s): %v", k.cluster, k.namespace, k.serviceAccount, err)
				}
				if a.RoleARN != k.role || a.Tags["env"] != "scale" {
					t.Fatalf("FindAssociation(%s, %s, %s) = %+v", k.cluster, k.namespace, k.serviceAccount, a)
				}
			}
			ns, sa := Key(per)
			if _, err := s.FindAssociation(t.Context(), ClusterName(0), ns, sa); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("association %d of %d exists: %v", per, per, err)
			}
			list, err := s.ListAssociations(t.Context(), identity.AssociationFilter{Cluster: ClusterName(clusters - 1)})
			if err != nil || len(list) != per {
				t.Errorf("ListAssociations of the last cluster: %d associations, %v; want %d", len(list), err, per)
			}
		})
	}
}

// BenchmarkFindAssociation looks up random existing associations among 3
// clusters of 1,000 and of 100,000 associations each, straight from the
// store and through the lookup cache holding every one of them.
//
//	go test -run '^$' -bench FindAssociation -benchtime 2s ./test/scale/
func BenchmarkFindAssociation(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, per := range []int{1_000, 100_000} {
			b.Run(fmt.Sprintf("%s/per-cluster=%d", backend, per), func(b *testing.B) {
				if backend == "postgres" {
					pgtest.URL(b)
				}
				s := open(b, backend, per)
				ks := keys(per, 1<<16)
				lookup := func(b *testing.B, s identity.Store) {
					ctx := context.Background()
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						k := ks[i&(len(ks)-1)]
						i++
						if _, err := s.FindAssociation(ctx, k.cluster, k.namespace, k.serviceAccount); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.Run("uncached", func(b *testing.B) { lookup(b, s) })
				b.Run("cached", func(b *testing.B) {
					c := cache.New(s, cache.Options{TTL: time.Hour, MaxEntries: 2 * clusters * per})
					warm(b, c, per)
					lookup(b, c)
				})
			})
		}
	}
}

// warm looks up every association once, so the cache holds all of them.
func warm(b *testing.B, c *cache.Store, per int) {
	b.Helper()
	start := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Value
	)
	for range 8 {
		wg.Go(func() {
			for j := int(next.Add(1)) - 1; j < clusters*per; j = int(next.Add(1)) - 1 {
				ns, sa := Key(j % per)
				if _, err := c.FindAssociation(context.Background(), ClusterName(j/per), ns, sa); err != nil {
					fail.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := fail.Load().(error); err != nil {
		b.Fatal(err)
	}
	if n := c.Stats().Entries; n != clusters*per {
		b.Fatalf("cache holds %d results after warming, want %d", n, clusters*per)
	}
	elapsed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.Logf("cache warmed with %d results in %v; live heap grew by %d bytes per cached result",
		clusters*per, elapsed.Round(time.Millisecond), (int64(after.HeapAlloc)-int64(before.HeapAlloc))/int64(clusters*per))
}
