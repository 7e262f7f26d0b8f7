package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// t0 is the fake clock's start: a fixed instant so golden bodies are stable.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeRetriever counts calls, hands out credentials valid for lifetime from
// its clock, and fails or blocks on command.
type fakeRetriever struct {
	now      func() time.Time
	lifetime time.Duration

	mu      sync.Mutex
	calls   int
	callAt  []time.Time
	err     error
	entered chan struct{} // if set, receives once per call
	release chan struct{} // if set, each call waits for it
}

func newFake(now func() time.Time, lifetime time.Duration) *fakeRetriever {
	return &fakeRetriever{now: now, lifetime: lifetime}
}

func (f *fakeRetriever) Retrieve(ctx context.Context, token string) (*Credentials, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.callAt = append(f.callAt, f.now())
	err := f.err
	entered, release := f.entered, f.release
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return &Credentials{
		AccessKeyID:     fmt.Sprintf("ASIAFAKE%04d", n),
		SecretAccessKey: "secret-" + fmt.Sprint(n),
		SessionToken:    "session-" + fmt.Sprint(n),
		AccountID:       "111122223333",
		Expiration:      f.now().Add(f.lifetime),
	}, nil
}

func (f *fakeRetriever) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeRetriever) CallTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.callAt...)
}

func (f *fakeRetriever) Fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// makeToken builds an unsigned-but-well-formed JWT with the given claims;
// zero times are left out. The agent never verifies signatures.
func makeToken(t testing.TB, sub string, iat, exp time.Time) string {
	t.Helper()
	claims := map[string]any{"sub": sub, "aud": []string{"pods.eks.amazonaws.com"}}
	if !iat.IsZero() {
		claims["iat"] = iat.Unix()
	}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + enc(payload) + "." + enc([]byte("signature-bytes"))
}

// podToken is a token issued at t0 that lives for a day, as EKS projects them.
func podToken(t testing.TB, sub string) string {
	return makeToken(t, sub, t0, t0.Add(24*time.Hour))
}
