package ratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestKeyAndNamespaceBuckets(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	l := New(Config{PerKey: 2, KeyBurst: 3, PerNamespace: 1, NamespaceBurst: 2, Now: clk.Now, Registerer: prometheus.NewRegistry()})
	for i := range 3 {
		if err := l.AllowKey("AKIA1"); err != nil {
			t.Fatalf("call %d within the burst refused: %v", i, err)
		}
	}
	if err := l.AllowKey("AKIA1"); !errors.Is(err, ErrLimited) {
		t.Fatalf("call over the burst: %v", err)
	}
	if err := l.AllowKey("AKIA2"); err != nil {
		t.Errorf("another key was limited by the first: %v", err)
	}
	clk.Add(time.Second) // refills 2 tokens
	for range 2 {
		if err := l.AllowKey("AKIA1"); err != nil {
			t.Fatalf("after refill: %v", err)
		}
	}

	ctx := context.Background()
	for range 2 {
		rel, err := l.Acquire(ctx, "prod", "noisy")
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if _, err := l.Acquire(ctx, "prod", "noisy"); !errors.Is(err, ErrLimited) {
		t.Fatalf("namespace over its burst: %v", err)
	}
	if rel, err := l.Acquire(ctx, "prod", "quiet"); err != nil {
		t.Errorf("a quiet namespace was limited by a noisy one: %v", err)
	} else {
		rel()
	}
	if rel, err := l.Acquire(ctx, "staging", "noisy"); err != nil {
		t.Errorf("the same namespace name in another cluster was limited: %v", err)
	} else {
		rel()
	}
	if got := testutil.ToFloat64(l.throttled.WithLabelValues("key")); got != 1 {
		t.Errorf("key throttles counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(l.throttled.WithLabelValues("namespace")); got != 1 {
		t.Errorf("namespace throttles counted %v, want 1", got)
	}
}

// TestFairQueue: with one STS slot busy, five calls of a noisy namespace
// queue before one of a quiet namespace; the quiet one is served second,
// not sixth.
func TestFairQueue(t *testing.T) {
	l := New(Config{MaxConcurrent: 1, MaxWait: time.Minute})
	ctx := context.Background()
	hold, err := l.Acquire(ctx, "c", "busy")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var served []string
	var wg sync.WaitGroup
	enqueue := func(ns string) {
		n := waiting(l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.Acquire(ctx, "c", ns)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			served = append(served, ns)
			mu.Unlock()
			rel()
		}()
		for waiting(l) == n { // wait until it is queued, to fix the order
			time.Sleep(time.Millisecond)
		}
	}
	for range 5 {
		enqueue("noisy")
	}
	enqueue("quiet")
	hold()
	wg.Wait()
	want := []string{"noisy", "quiet", "noisy", "noisy", "noisy", "noisy"}
	if diff := cmp.Diff(want, served); diff != "" {
		t.Errorf("service order (-want +got):\n%s", diff)
	}
	if l.inFlight != 0 || len(l.order) != 0 || len(l.waiting) != 0 {
		t.Errorf("slots leaked: inFlight=%d order=%v", l.inFlight, l.order)
	}
}

func waiting(l *Limiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, q := range l.waiting {
		n += len(q)
	}
	return n
}

func TestQueueGivesUp(t *testing.T) {
	l := New(Config{MaxConcurrent: 1, MaxWait: 20 * time.Millisecond})
	ctx := context.Background()
	hold, err := l.Acquire(ctx, "c", "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "c", "b"); !errors.Is(err, ErrLimited) {
		t.Fatalf("waiting past MaxWait: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Acquire(cctx, "c", "b"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	hold()
	// Nothing leaked: the slot is free again.
	rel, err := l.Acquire(ctx, "c", "b")
	if err != nil {
		t.Fatalf("slot not returned after give-ups: %v", err)
	}
	rel()
	if l.inFlight != 0 || waiting(l) != 0 {
		t.Errorf("inFlight=%d waiting=%d", l.inFlight, waiting(l))
	}
}

// TestQueueUnderLoad: many goroutines, few slots: never more than
// MaxConcurrent in flight, and everything is released.
func TestQueueUnderLoad(t *testing.T) {
	l := New(Config{MaxConcurrent: 3, MaxWait: time.Minute})
	var mu sync.Mutex
	cur, peak := 0, 0
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.Acquire(context.Background(), "c", []string{"a", "b", "c", "d"}[i%4])
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			cur--
			mu.Unlock()
			rel()
		}()
	}
	wg.Wait()
	if peak > 3 {
		t.Errorf("%d calls in flight, limit 3", peak)
	}
	if l.inFlight != 0 || waiting(l) != 0 {
		t.Errorf("inFlight=%d waiting=%d after all released", l.inFlight, waiting(l))
	}
}

func TestNilAndDisabled(t *testing.T) {
	var l *Limiter
	if err := l.AllowKey("x"); err != nil {
		t.Error(err)
	}
	rel, err := l.Acquire(context.Background(), "c", "n")
	if err != nil {
		t.Fatal(err)
	}
	rel()
	off := New(Config{})
	for range 100 {
		if err := off.AllowKey("x"); err != nil {
			t.Fatal(err)
		}
		rel, err := off.Acquire(context.Background(), "c", "n")
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
}
