package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestCache(clock *fakeClock, next Retriever, m *Metrics) *Cache {
	return NewCache(CacheConfig{
		Next:            next,
		Now:             clock.Now,
		MaxAge:          3 * time.Hour,
		MinValidity:     15 * time.Minute,
		RefreshInterval: time.Minute,
		Metrics:         m,
	})
}

func TestCacheHitMiss(t *testing.T) {
	tests := []struct {
		name      string
		lifetime  time.Duration
		tokenExp  time.Duration // from t0; 0 means a day
		advance   time.Duration
		wantCalls int // after the second request
	}{
		{name: "immediately", lifetime: time.Hour, advance: 0, wantCalls: 1},
		{name: "16m left", lifetime: time.Hour, advance: 44 * time.Minute, wantCalls: 1},
		{name: "exactly MinValidity left", lifetime: time.Hour, advance: 45 * time.Minute, wantCalls: 1},
		{name: "under MinValidity", lifetime: time.Hour, advance: 45*time.Minute + time.Second, wantCalls: 2},
		{name: "expired", lifetime: time.Hour, advance: 2 * time.Hour, wantCalls: 2},
		{name: "younger than MaxAge", lifetime: 6 * time.Hour, advance: 3*time.Hour - time.Second, wantCalls: 1},
		{name: "MaxAge reached", lifetime: 6 * time.Hour, advance: 3 * time.Hour, wantCalls: 2},
		// Credentials shorter-lived than 2·MinValidity use half their
		// lifetime as the threshold, or every request would be a miss.
		{name: "short-lived creds within half", lifetime: 10 * time.Minute, advance: 5 * time.Minute, wantCalls: 1},
		{name: "short-lived creds past half", lifetime: 10 * time.Minute, advance: 5*time.Minute + time.Second, wantCalls: 2},
		{name: "token expired", lifetime: 6 * time.Hour, tokenExp: 30 * time.Minute, advance: 30 * time.Minute, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			fake := newFake(clock.Now, tt.lifetime)
			reg := prometheus.NewPedanticRegistry()
			m := NewMetrics(reg)
			c := newTestCache(clock, fake, m)
			exp := t0.Add(24 * time.Hour)
			if tt.tokenExp != 0 {
				exp = t0.Add(tt.tokenExp)
			}
			tok := makeToken(t, "system:serviceaccount:default:app", t0, exp)

			first, err := c.Retrieve(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(tt.advance)
			second, err := c.Retrieve(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if got := fake.Calls(); got != tt.wantCalls {
				t.Errorf("server calls = %d, want %d", got, tt.wantCalls)
			}
			if hit := tt.wantCalls == 1; hit != (first == second) {
				t.Errorf("second request returned the cached credentials = %v, want %v", first == second, hit)
			}
			wantHits := float64(2 - tt.wantCalls)
			if got := testutil.ToFloat64(m.cacheHits); got != wantHits {
				t.Errorf("cache_hits_total = %v, want %v", got, wantHits)
			}
			if got := testutil.ToFloat64(m.cacheMisses); got != float64(tt.wantCalls) {
				t.Errorf("cache_misses_total = %v, want %v", got, tt.wantCalls)
			}
			if got := testutil.ToFloat64(m.cacheEntries); got != 1 {
				t.Errorf("cache_entries = %v, want 1", got)
			}
		})
	}
}

func TestCacheKeyIsNotTheToken(t *testing.T) {
	clock := newClock()
	c := newTestCache(clock, newFake(clock.Now, time.Hour), nil)
	tok := podToken(t, "a")
	if _, err := c.Retrieve(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	for k := range c.entries {
		if bytes.Contains(k[:], []byte(tok)) || k != keyOf(tok) {
			t.Errorf("map key %x is not the token's SHA-256", k)
		}
	}
}

func TestCacheLRU(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := NewCache(CacheConfig{Next: fake, Now: clock.Now, MaxEntries: 3})
	ctx := context.Background()
	tok := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d"} {
		tok[n] = podToken(t, n)
	}
	get := func(n string) {
		t.Helper()
		if _, err := c.Retrieve(ctx, tok[n]); err != nil {
			t.Fatal(err)
		}
	}
	get("a")
	get("b")
	get("c")
	get("a") // a is now the most recently used; b the least
	get("d") // evicts b
	if got := c.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	var order []string
	for el := c.lru.Front(); el != nil; el = el.Next() {
		for n, tk := range tok {
			if el.Value.(*entry).key == keyOf(tk) {
				order = append(order, n)
			}
		}
	}
	if diff := cmp.Diff([]string{"d", "a", "c"}, order); diff != "" {
		t.Errorf("LRU order (-want +got):\n%s", diff)
	}
	calls := fake.Calls()
	get("a")
	get("c")
	get("d")
	if got := fake.Calls(); got != calls {
		t.Errorf("requests for cached tokens made %d server calls", got-calls)
	}
	get("b")
	if got := fake.Calls(); got != calls+1 {
		t.Errorf("evicted token b: server calls = %d, want %d", got, calls+1)
	}
}

func TestCacheSingleflight(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	fake.entered = make(chan struct{}, 200)
	fake.release = make(chan struct{})
	c := newTestCache(clock, fake, nil)
	tok := podToken(t, "app")

	const n = 100
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(n)
	results := make([]*Credentials, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			results[i], errs[i] = c.Retrieve(context.Background(), tok)
		}()
	}
	started.Wait()
	<-fake.entered // the one flight is in the server call
	// Let the other goroutines pile up behind it before it returns.
	for range 50 {
		time.Sleep(time.Millisecond)
	}
	close(fake.release)
	wg.Wait()
	if got := fake.Calls(); got != 1 {
		t.Errorf("server calls = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if results[i] != results[0] {
			t.Fatalf("request %d got different credentials", i)
		}
	}

	// Other tokens are separate flights.
	if _, err := c.Retrieve(context.Background(), podToken(t, "other")); err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls(); got != 2 {
		t.Errorf("after another token: server calls = %d, want 2", got)
	}
}

// A request that gives up must not fail the others waiting for the same
// exchange: the flight is not tied to the request that started it.
func TestCacheFlightOutlivesFirstRequest(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	fake.entered = make(chan struct{}, 1)
	fake.release = make(chan struct{})
	c := newTestCache(clock, fake, nil)
	tok := podToken(t, "app")

	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := c.Retrieve(ctx, tok)
		firstErr <- err
	}()
	<-fake.entered
	secondDone := make(chan error, 1)
	go func() {
		_, err := c.Retrieve(context.Background(), tok)
		secondDone <- err
	}()
	cancel()
	err := <-firstErr
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable {
		t.Errorf("cancelled request: err = %v, want a 503 *Error", err)
	}
	close(fake.release)
	if err := <-secondDone; err != nil {
		t.Errorf("second request: %v", err)
	}
	if got := fake.Calls(); got != 1 {
		t.Errorf("server calls = %d, want 1", got)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d, want 1: the flight's result should be cached", c.Len())
	}
}

func TestCacheBackgroundRenewal(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		// scanAt are the offsets from the first request at which scans run;
		// wantCalls the server calls after each.
		scanAt    []time.Duration
		wantCalls []int
	}{
		{
			// Renewed once fewer than MinValidity+2·RefreshInterval = 17m remain.
			name:      "ahead of expiry",
			lifetime:  time.Hour,
			scanAt:    []time.Duration{time.Minute, 42 * time.Minute, 43*time.Minute + time.Second, 44 * time.Minute},
			wantCalls: []int{1, 1, 2, 2},
		},
		{
			// Renewed at 0.8·MaxAge = 2h24m although the credentials last 6h.
			name:      "MaxAge",
			lifetime:  6 * time.Hour,
			scanAt:    []time.Duration{2*time.Hour + 23*time.Minute, 2*time.Hour + 24*time.Minute, 2*time.Hour + 25*time.Minute},
			wantCalls: []int{1, 2, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			fake := newFake(clock.Now, tt.lifetime)
			m := NewMetrics(nil)
			c := newTestCache(clock, fake, m)
			tok := podToken(t, "app")
			first, err := c.Retrieve(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			for i, at := range tt.scanAt {
				clock.now = t0.Add(at)
				c.renew(context.Background())
				if got := fake.Calls(); got != tt.wantCalls[i] {
					t.Errorf("after scan at %v: server calls = %d, want %d", at, got, tt.wantCalls[i])
				}
			}
			// The pod's next request is a hit on the renewed credentials.
			got, err := c.Retrieve(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if got == first {
				t.Error("request after renewal got the old credentials")
			}
			if calls := fake.Calls(); calls != tt.wantCalls[len(tt.wantCalls)-1] {
				t.Errorf("request after renewal called the server")
			}
			if got := testutil.ToFloat64(m.refreshes.WithLabelValues("ok")); got != 1 {
				t.Errorf(`refreshes_total{result="ok"} = %v, want 1`, got)
			}
		})
	}
}

func TestCacheRenewalStopsAtTokenExpiry(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := newTestCache(clock, fake, nil)
	// A day-long token issued 22 hours ago: only its expiry stops renewal.
	tokExp := t0.Add(2 * time.Hour)
	tok := makeToken(t, "app", tokExp.Add(-24*time.Hour), tokExp)
	if _, err := c.Retrieve(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	// No more requests: a scan a minute for three hours.
	for range 180 {
		clock.Advance(time.Minute)
		c.renew(context.Background())
	}
	times := fake.CallTimes()
	if len(times) < 2 {
		t.Fatalf("server calls = %d, want renewals before the token expired", len(times))
	}
	for _, at := range times {
		if !at.Before(tokExp) {
			t.Errorf("renewal at %v, after the token expired at %v", at, tokExp)
		}
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d after the token expired, want 0", c.Len())
	}
}

// A token without iat renews for at most MaxAge after its last request; the
// pod has moved on to a newer token or gone.
func TestCacheRenewalStopsWhenIdle(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := newTestCache(clock, fake, nil)
	tok := makeToken(t, "app", time.Time{}, t0.Add(24*time.Hour))
	if _, err := c.Retrieve(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	for range 6 * 60 {
		clock.Advance(time.Minute)
		c.renew(context.Background())
	}
	times := fake.CallTimes()
	last := times[len(times)-1]
	if idle := last.Sub(t0); idle > 3*time.Hour {
		t.Errorf("last renewal %v after the last request, want at most MaxAge", idle)
	}
	if len(times) < 3 {
		t.Errorf("server calls = %d, want renewals while the token was in use", len(times))
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d, want 0 once the unrenewed credentials expired", c.Len())
	}
}

func TestCacheRunRenewsWithoutRequests(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := NewCache(CacheConfig{Next: fake, Now: clock.Now, RefreshInterval: time.Millisecond})
	tok := podToken(t, "app")
	if _, err := c.Retrieve(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	clock.Advance(50 * time.Minute) // 10m left: due for renewal
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	for fake.Calls() < 2 {
		select {
		case <-deadline:
			t.Fatal("Run did not renew the entry")
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
}

func TestCacheOutage(t *testing.T) {
	transient := []struct {
		name string
		err  error
	}{
		{"unavailable", &Error{Status: 503, Code: "ServiceUnavailableException", Message: "down"}},
		{"throttled", &Error{Status: 429, Code: "ThrottlingException", Message: "slow down"}},
		{"internal", &Error{Status: 500, Code: "InternalServerException", Message: "boom"}},
		{"misconfigured", &Error{Status: 500, Code: "AgentMisconfigured", Message: "bad key"}},
		{"untyped", errors.New("connection refused")},
	}
	for _, tt := range transient {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			fake := newFake(clock.Now, time.Hour)
			m := NewMetrics(nil)
			c := newTestCache(clock, fake, m)
			tok := podToken(t, "app")
			cached, err := c.Retrieve(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			fake.Fail(tt.err)

			// Background renewal fails: the entry stays.
			clock.Advance(50 * time.Minute)
			c.renew(context.Background())
			if c.Len() != 1 {
				t.Fatal("failed renewal dropped the entry")
			}
			if got := testutil.ToFloat64(m.refreshes.WithLabelValues("error")); got != 1 {
				t.Errorf(`refreshes_total{result="error"} = %v, want 1`, got)
			}
			calls := fake.Calls()

			// Requests right after the failure get the valid cached
			// credentials without waiting on the server again.
			got, err := c.Retrieve(context.Background(), tok)
			if err != nil || got != cached {
				t.Fatalf("during outage: got %v, %v; want the cached credentials", got, err)
			}
			if fake.Calls() != calls {
				t.Errorf("request within OutageBackoff called the server")
			}

			// Later requests try the server, then fall back.
			clock.Advance(time.Minute)
			got, err = c.Retrieve(context.Background(), tok)
			if err != nil || got != cached {
				t.Fatalf("after backoff: got %v, %v; want the cached credentials", got, err)
			}
			if fake.Calls() != calls+1 {
				t.Errorf("request after OutageBackoff: server calls = %d, want %d", fake.Calls(), calls+1)
			}
			if got := testutil.ToFloat64(m.staleServed); got != 2 {
				t.Errorf("stale_served_total = %v, want 2", got)
			}

			// Never expired credentials.
			clock.Advance(10 * time.Minute) // 61m: expired
			got, err = c.Retrieve(context.Background(), tok)
			if err == nil {
				t.Fatalf("after expiry: got credentials expiring %v, want the error", got.Expiration)
			}
			if !errors.Is(err, tt.err) && err != tt.err {
				t.Errorf("after expiry: err = %v, want %v", err, tt.err)
			}
			c.renew(context.Background())

			// Recovery.
			fake.Fail(nil)
			got, err = c.Retrieve(context.Background(), tok)
			if err != nil || got == cached || !got.Expiration.After(clock.Now()) {
				t.Fatalf("after recovery: got %v, %v; want new credentials", got, err)
			}
		})
	}
}

func TestCacheTokenErrorsEvict(t *testing.T) {
	tests := []*Error{
		{Status: 400, Code: "InvalidTokenException", Message: "bad signature"},
		{Status: 400, Code: "ExpiredTokenException", Message: "expired"},
		{Status: 404, Code: "ResourceNotFoundException", Message: "no association"},
		{Status: 403, Code: "AccessDeniedException", Message: "denied"},
	}
	for _, e := range tests {
		t.Run(e.Code, func(t *testing.T) {
			for _, background := range []bool{false, true} {
				clock := newClock()
				fake := newFake(clock.Now, time.Hour)
				c := newTestCache(clock, fake, nil)
				tok := podToken(t, "app")
				if _, err := c.Retrieve(context.Background(), tok); err != nil {
					t.Fatal(err)
				}
				fake.Fail(e)
				clock.Advance(50 * time.Minute) // still valid, but due
				if background {
					c.renew(context.Background())
				} else {
					_, err := c.Retrieve(context.Background(), tok)
					if err != e {
						t.Errorf("err = %v, want %v", err, e)
					}
				}
				if c.Len() != 0 {
					t.Errorf("background=%v: Len = %d, want 0", background, c.Len())
				}
				// Next request asks the server again and gets the error.
				calls := fake.Calls()
				if _, err := c.Retrieve(context.Background(), tok); err != e {
					t.Errorf("background=%v: next request err = %v, want %v", background, err, e)
				}
				if fake.Calls() != calls+1 {
					t.Errorf("background=%v: next request did not call the server", background)
				}
			}
		})
	}
}

func TestCacheErrorOnMissIsNotCached(t *testing.T) {
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := newTestCache(clock, fake, nil)
	fake.Fail(&Error{Status: 503, Code: "ServiceUnavailableException"})
	tok := podToken(t, "app")
	for i := 1; i <= 2; i++ {
		if _, err := c.Retrieve(context.Background(), tok); err == nil {
			t.Fatal("want error")
		}
		if fake.Calls() != i {
			t.Errorf("calls = %d, want %d", fake.Calls(), i)
		}
	}
	if c.Len() != 0 {
		t.Errorf("Len = %d, want 0", c.Len())
	}
}

func TestCacheLogsNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clock := newClock()
	fake := newFake(clock.Now, time.Hour)
	c := NewCache(CacheConfig{Next: fake, Now: clock.Now, Logger: log})
	tok := podToken(t, "app")
	creds, err := c.Retrieve(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("creds", "creds", creds)
	fake.Fail(&Error{Status: 503, Code: "ServiceUnavailableException", Message: "down"})
	clock.Advance(50 * time.Minute)
	c.renew(context.Background())
	fake.Fail(&Error{Status: 400, Code: "InvalidTokenException", Message: "bad"})
	clock.Advance(time.Minute)
	c.renew(context.Background())
	out := buf.String()
	if !strings.Contains(out, "serving cached credentials") || !strings.Contains(out, "dropping cached credentials") {
		t.Fatalf("expected both log lines, got:\n%s", out)
	}
	for _, secret := range []string{tok, strings.Split(tok, ".")[1], strings.Split(tok, ".")[2], creds.SecretAccessKey, creds.SessionToken} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q:\n%s", secret, out)
		}
	}
}

func TestTokenTimes(t *testing.T) {
	tests := []struct {
		name     string
		token    string
		exp, iat time.Time
	}{
		{"both", makeToken(t, "x", t0, t0.Add(time.Hour)), t0.Add(time.Hour), t0},
		{"no iat", makeToken(t, "x", time.Time{}, t0.Add(time.Hour)), t0.Add(time.Hour), time.Time{}},
		{"none", makeToken(t, "x", time.Time{}, time.Time{}), time.Time{}, time.Time{}},
		{"garbage payload", "a.!!!.c", time.Time{}, time.Time{}},
		{"not json", "a.bm90IGpzb24.c", time.Time{}, time.Time{}},
		{"string exp", "a.eyJleHAiOiJzb29uIn0.c", time.Time{}, time.Time{}},
		{"fractional exp", "a.eyJleHAiOjE3NzIzNjY0MDAuNX0.c", time.Unix(1772366400, 0), time.Time{}},
		{"one part", "abc", time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, iat := tokenTimes(tt.token)
			if !exp.Equal(tt.exp) || !iat.Equal(tt.iat) {
				t.Errorf("tokenTimes = %v, %v; want %v, %v", exp, iat, tt.exp, tt.iat)
			}
		})
	}
}

func FuzzTokenParsers(f *testing.F) {
	f.Add(makeToken(f, "x", t0, t0.Add(time.Hour)))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("a.eyJleHAiOjF9.c")
	f.Fuzz(func(t *testing.T, s string) {
		ok := wellFormedToken(s)
		if ok && strings.Count(s, ".") != 2 {
			t.Errorf("wellFormedToken(%q) accepted %d dots", s, strings.Count(s, "."))
		}
		_, _ = tokenTimes(s)
	})
}

func TestCredentialsHideSecrets(t *testing.T) {
	c := &Credentials{AccessKeyID: "ASIAX", SecretAccessKey: "s3cr3t", SessionToken: "t0k3n", AccountID: "1", Expiration: t0}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "creds", c)
	for _, out := range []string{buf.String(), c.String()} {
		if strings.Contains(out, "s3cr3t") || strings.Contains(out, "t0k3n") || !strings.Contains(out, "ASIAX") {
			t.Errorf("output %q: secrets shown or access key id missing", out)
		}
	}
}
