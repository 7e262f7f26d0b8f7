package k8s

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
)

var t0 = time.Unix(1800000000, 0)

func TestPEMSource(t *testing.T) {
	rk := rsaKey(t, 0)
	other := rsaKey(t, 1)
	ek := ecKey(t)
	cluster := &identity.Cluster{Name: "p", Issuer: "https://p.test",
		Keys: identity.KeySource{Kind: identity.KeysPEM, PEM: pemPKIX(t, other.Public()) + pemPKIX(t, rk.Public()) + pemPKIX(t, ek.Public())}}
	rsaOnly := &identity.Cluster{Name: "r", Issuer: "https://p.test",
		Keys: identity.KeySource{Kind: identity.KeysPEM, PEM: pemPKIX(t, rk.Public())}}

	tests := []struct {
		name    string
		cluster *identity.Cluster
		key     testKey
		wantMsg string
	}{
		{name: "RSA, no kid", cluster: cluster, key: testKey{priv: rk}},
		{name: "RSA, any kid matches a PEM key", cluster: cluster, key: testKey{kid: "whatever", priv: rk}},
		{name: "EC", cluster: cluster, key: testKey{kid: "e", priv: ek}},
		{name: "unknown RSA key", cluster: rsaOnly, key: testKey{priv: other}, wantMsg: `token signature is not valid for the signing keys of cluster "r"`},
		{name: "unknown RSA key with kid", cluster: rsaOnly, key: testKey{kid: "k", priv: other}, wantMsg: `token key "k" is not among the signing keys of cluster "r", and no key without a kid verifies it`},
		{name: "no EC key", cluster: rsaOnly, key: testKey{priv: ek}, wantMsg: `cluster "r" has no ES256 signing key`},
	}
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tt.cluster, tt.key.sign(t, podClaims("https://p.test", t0)))
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got.PodUID != "pod-uid" {
					t.Errorf("PodUID = %q", got.PodUID)
				}
				return
			}
			if err == nil || codeOf(t, err) != identity.CodeInvalidToken || !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Fatalf("Verify error = %v, want InvalidToken %q", err, tt.wantMsg)
			}
		})
	}
}

// urlCluster is a jwksURL cluster trusting ks's CA.
func urlCluster(ks *keyServer) *identity.Cluster {
	return &identity.Cluster{Name: "u", Issuer: "https://u.test", ModifiedAt: t0,
		Keys: identity.KeySource{Kind: identity.KeysJWKSURL, URL: ks.URL + "/keys", CACert: ks.caPEM()}}
}

func TestJWKSURLRotation(t *testing.T) {
	k1 := testKey{kid: "k1", priv: rsaKey(t, 0)}
	k2 := testKey{kid: "k2", priv: ecKey(t)}
	ks := newKeyServer(t, jwks(t, k1))
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, Logger: discardLogger()})
	c := urlCluster(ks)
	ctx := context.Background()
	verify := func(k testKey) error {
		_, err := v.Verify(ctx, c, k.sign(t, podClaims(c.Issuer, clock.Now())))
		return err
	}

	if err := verify(k1); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if err := verify(k1); err != nil {
		t.Fatalf("k1 again: %v", err)
	}
	if n := ks.hits.Load(); n != 1 {
		t.Fatalf("after two verifications the server saw %d requests, want 1 (cached)", n)
	}

	// The cluster rotates to k2 right after our fetch: within the refetch
	// interval its tokens are refused without another fetch...
	ks.set(jwks(t, k1, k2), http.StatusOK)
	clock.Advance(DefaultRefetchInterval - time.Second)
	if err := verify(k2); err == nil || codeOf(t, err) != identity.CodeInvalidToken || !strings.Contains(errMessage(err), `token key "k2" (ES256) is not among`) {
		t.Fatalf("k2 within the refetch interval: %v, want InvalidToken", err)
	}
	if n := ks.hits.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
	// ...and once the interval has passed, its unknown kid brings it in.
	clock.Advance(time.Second)
	if err := verify(k2); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if n := ks.hits.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}
	if err := verify(k1); err != nil {
		t.Fatalf("k1 after rotation: %v", err)
	}
	if n := ks.hits.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}
}

func TestJWKSURLRefetchRateLimit(t *testing.T) {
	k1 := testKey{kid: "k1", priv: rsaKey(t, 0)}
	ks := newKeyServer(t, jwks(t, k1))
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, RefetchInterval: time.Minute, Logger: discardLogger()})
	c := urlCluster(ks)
	ctx := context.Background()
	if _, err := v.Verify(ctx, c, k1.sign(t, podClaims(c.Issuer, t0))); err != nil {
		t.Fatal(err)
	}

	// Forged kids, sequentially and concurrently, across three intervals:
	// each interval allows one refetch.
	for interval := 1; interval <= 3; interval++ {
		clock.Advance(time.Minute)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				forged := testKey{kid: fmt.Sprintf("forged-%d-%d", interval, i), priv: k1.priv}
				_, err := v.Verify(ctx, c, forged.sign(t, podClaims(c.Issuer, clock.Now())))
				if err == nil {
					t.Error("token with an unknown kid verified")
				}
			}()
		}
		wg.Wait()
		for i := range 10 {
			forged := testKey{kid: fmt.Sprintf("again-%d-%d", interval, i), priv: k1.priv}
			if _, err := v.Verify(ctx, c, forged.sign(t, podClaims(c.Issuer, clock.Now()))); err == nil {
				t.Fatal("token with an unknown kid verified")
			}
		}
		if got, want := ks.hits.Load(), int32(1+interval); got != want {
			t.Fatalf("after interval %d the server saw %d requests, want %d", interval, got, want)
		}
	}
}

func TestJWKSURLConcurrentColdFetch(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	ks := newKeyServer(t, jwks(t, k1))
	release := make(chan struct{})
	ks.mu.Lock()
	ks.block = release
	ks.mu.Unlock()
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	c := urlCluster(ks)
	tok := k1.sign(t, podClaims(c.Issuer, t0))

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(context.Background(), c, tok)
			errs <- err
		}()
	}
	// Let the one request through once it has arrived.
	for ks.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := ks.hits.Load(); n != 1 {
		t.Errorf("50 concurrent cold verifications made %d fetches, want 1", n)
	}
}

func TestJWKSURLFailures(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	good := jwks(t, k1)

	tests := []struct {
		name     string
		setup    func(ks *keyServer, c *identity.Cluster)
		checkMsg string // in CheckKeys' message
		code     identity.Code
	}{
		{name: "server error", setup: func(ks *keyServer, c *identity.Cluster) { ks.set(good, http.StatusInternalServerError) },
			checkMsg: "HTTP 500 Internal Server Error", code: identity.CodeServiceUnavailable},
		{name: "not a JWKS", setup: func(ks *keyServer, c *identity.Cluster) { ks.set("<html>hi</html>", http.StatusOK) },
			checkMsg: "JWKS is not valid JSON", code: identity.CodeServiceUnavailable},
		{name: "oversize response", setup: func(ks *keyServer, c *identity.Cluster) {
			ks.set(`{"keys":[`+good[9:len(good)-2]+`],"pad":"`+strings.Repeat("x", MaxKeySetSize)+`"}`, http.StatusOK)
		}, checkMsg: "larger than 1048576 bytes", code: identity.CodeServiceUnavailable},
		{name: "untrusted certificate", setup: func(ks *keyServer, c *identity.Cluster) { c.Keys.CACert = "" },
			checkMsg: "certificate", code: identity.CodeServiceUnavailable},
		{name: "server down", setup: func(ks *keyServer, c *identity.Cluster) { ks.Close() },
			checkMsg: "cannot fetch signing keys of cluster \"u\" from https://127.0.0.1", code: identity.CodeServiceUnavailable},
		{name: "plain http", setup: func(ks *keyServer, c *identity.Cluster) {
			c.Keys.URL = strings.Replace(c.Keys.URL, "https:", "http:", 1)
		},
			checkMsg: "must use https", code: identity.CodeInvalidParameter},
		{name: "bad CA", setup: func(ks *keyServer, c *identity.Cluster) { c.Keys.CACert = "not a cert" },
			checkMsg: "caCert holds no PEM certificate", code: identity.CodeInvalidParameter},
		{name: "relative URL", setup: func(ks *keyServer, c *identity.Cluster) { c.Keys.URL = "/keys" },
			checkMsg: "is not an absolute URL", code: identity.CodeInvalidParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks := newKeyServer(t, good)
			c := urlCluster(ks)
			tt.setup(ks, c)
			v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})

			n, err := v.CheckKeys(context.Background(), c)
			if err == nil {
				t.Fatalf("CheckKeys = %d keys, want error", n)
			}
			if got := codeOf(t, err); got != tt.code || !strings.Contains(errMessage(err), tt.checkMsg) {
				t.Errorf("CheckKeys error = %v (code %v), want code %v and %q", err, got, tt.code, tt.checkMsg)
			}

			_, err = v.Verify(context.Background(), c, k1.sign(t, podClaims(c.Issuer, t0)))
			want := identity.CodeServiceUnavailable
			if tt.code == identity.CodeInvalidParameter {
				want = identity.CodeInternal // the server's configuration is wrong, not the token
			}
			if err == nil || codeOf(t, err) != want {
				t.Fatalf("Verify error = %v, want code %v", err, want)
			}
			if !strings.Contains(err.Error(), tt.checkMsg) {
				t.Errorf("Verify error %q does not keep the cause %q for logs", err, tt.checkMsg)
			}
		})
	}
}

// A dead key server is asked once per refetch interval, not once a request,
// and keys come back when it does.
func TestJWKSURLFailureBackoff(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	ks := newKeyServer(t, jwks(t, k1))
	ks.set("", http.StatusServiceUnavailable)
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, Logger: discardLogger()})
	c := urlCluster(ks)
	tok := k1.sign(t, podClaims(c.Issuer, t0))
	for range 5 {
		if _, err := v.Verify(context.Background(), c, tok); err == nil || codeOf(t, err) != identity.CodeServiceUnavailable {
			t.Fatalf("Verify error = %v, want ServiceUnavailable", err)
		}
	}
	if n := ks.hits.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
	ks.set(jwks(t, k1), http.StatusOK)
	clock.Advance(DefaultRefetchInterval)
	if _, err := v.Verify(context.Background(), c, tok); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
	if n := ks.hits.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}
}

// Keys are refreshed after KeyTTL, so a key the cluster dropped stops
// verifying; a failed refresh keeps the old keys.
func TestJWKSURLKeyTTL(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	k2 := testKey{kid: "k2", priv: ecKey(t)}
	ks := newKeyServer(t, jwks(t, k1, k2))
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, KeyTTL: 10 * time.Minute, Logger: discardLogger()})
	c := urlCluster(ks)
	verify := func(k testKey) error {
		_, err := v.Verify(context.Background(), c, k.sign(t, podClaims(c.Issuer, clock.Now())))
		return err
	}
	if err := verify(k1); err != nil {
		t.Fatal(err)
	}

	ks.set("", http.StatusBadGateway)
	clock.Advance(10 * time.Minute)
	if err := verify(k1); err != nil {
		t.Fatalf("failed refresh must keep the old keys: %v", err)
	}
	if n := ks.hits.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}

	ks.set(jwks(t, k2), http.StatusOK)
	clock.Advance(DefaultRefetchInterval)
	if err := verify(k2); err != nil {
		t.Fatal(err)
	}
	if n := ks.hits.Load(); n != 3 {
		t.Fatalf("server saw %d requests, want 3", n)
	}
	if err := verify(k1); err == nil || codeOf(t, err) != identity.CodeInvalidToken {
		t.Fatalf("dropped key k1: %v, want InvalidToken", err)
	}
}

func TestKubernetesSource(t *testing.T) {
	podA := fixture(t, "cluster-a/token-pod-bound.jwt")
	ks := newKeyServer(t, fixture(t, "cluster-a/jwks.json"))
	var mu sync.Mutex
	var paths []string
	check := func(r *http.Request) int {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer reader-token" {
			return http.StatusUnauthorized
		}
		if r.URL.Path != "/proxy/openid/v1/jwks" && r.URL.Path != "/openid/v1/jwks" {
			return http.StatusNotFound
		}
		return 0
	}
	ks.mu.Lock()
	ks.check = check
	ks.mu.Unlock()
	cluster := func(base, bearer string) *identity.Cluster {
		return &identity.Cluster{Name: "a", Issuer: issuerA, ModifiedAt: t0,
			Keys: identity.KeySource{Kind: identity.KeysKubernetes, URL: base, BearerToken: bearer, CACert: ks.caPEM()}}
	}
	tests := []struct {
		name     string
		base     string
		bearer   string
		wantPath string
		wantErr  string
	}{
		{name: "base URL", base: ks.URL, bearer: "reader-token", wantPath: "/openid/v1/jwks"},
		{name: "base URL with slash", base: ks.URL + "/", bearer: "reader-token", wantPath: "/openid/v1/jwks"},
		{name: "base URL behind a proxy path", base: ks.URL + "/proxy", bearer: "reader-token", wantPath: "/proxy/openid/v1/jwks"},
		{name: "wrong bearer token", base: ks.URL, bearer: "nope", wantPath: "/openid/v1/jwks",
			wantErr: "HTTP 401 Unauthorized (check that the bearer token is valid and may get /openid/v1/jwks)"},
		{name: "no bearer token", base: ks.URL, wantPath: "/openid/v1/jwks", wantErr: "HTTP 401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			paths = nil
			mu.Unlock()
			v := NewVerifier(VerifierConfig{Now: func() time.Time { return fixtureNow }, Logger: discardLogger()})
			c := cluster(tt.base, tt.bearer)
			n, err := v.CheckKeys(context.Background(), c)
			mu.Lock()
			gotPaths := strings.Join(paths, ",")
			mu.Unlock()
			if gotPaths != tt.wantPath {
				t.Errorf("requested paths %q, want %q", gotPaths, tt.wantPath)
			}
			if tt.wantErr != "" {
				if err == nil || codeOf(t, err) != identity.CodeServiceUnavailable || !strings.Contains(errMessage(err), tt.wantErr) {
					t.Fatalf("CheckKeys error = %v, want ServiceUnavailable %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.bearer) && tt.bearer != "" {
					t.Errorf("error %q contains the bearer token", err)
				}
				return
			}
			if err != nil || n != 1 {
				t.Fatalf("CheckKeys = %d, %v; want 1 key", n, err)
			}
			got, err := v.Verify(context.Background(), c, podA)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.PodName != "checkout-7d4b9c-x2x9q" {
				t.Errorf("PodName = %q", got.PodName)
			}
			mu.Lock()
			if len(paths) != 1 {
				t.Errorf("Verify after CheckKeys fetched again: %q", paths)
			}
			mu.Unlock()
		})
	}
}

func TestJWKSFileRotation(t *testing.T) {
	k1 := testKey{kid: "k1", priv: rsaKey(t, 0)}
	k2 := testKey{kid: "k2", priv: rsaKey(t, 1)}
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(jwks(t, k1))
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, Logger: discardLogger()})
	c := &identity.Cluster{Name: "f", Issuer: "https://f.test", ModifiedAt: t0,
		Keys: identity.KeySource{Kind: identity.KeysJWKSFile, Path: path}}
	verify := func(k testKey) error {
		_, err := v.Verify(context.Background(), c, k.sign(t, podClaims(c.Issuer, clock.Now())))
		return err
	}
	if err := verify(k1); err != nil {
		t.Fatal(err)
	}
	write(jwks(t, k2))
	if err := verify(k2); err == nil {
		t.Fatal("k2 verified within the refetch interval: the file was re-read too soon")
	}
	clock.Advance(DefaultRefetchInterval)
	if err := verify(k2); err != nil {
		t.Fatalf("k2 after the file changed: %v", err)
	}

	// A file that disappears keeps the keys we have.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultKeyTTL)
	if err := verify(k2); err != nil {
		t.Fatalf("k2 after the file vanished: %v", err)
	}
	missing := *c
	missing.Name = "g"
	if _, err := v.CheckKeys(context.Background(), &missing); err == nil || codeOf(t, err) != identity.CodeInvalidParameter || !strings.Contains(errMessage(err), "no such file") {
		t.Fatalf("CheckKeys on a missing file: %v, want InvalidParameter", err)
	}
}

// A cluster's keys are reloaded when its key source or ModifiedAt changes.
func TestCacheInvalidation(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	k2 := testKey{kid: "k2", priv: ecKey(t)}
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	c := &identity.Cluster{Name: "c", Issuer: "https://c.test", ModifiedAt: t0,
		Keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: jwks(t, k1)}}
	tok1 := k1.sign(t, podClaims(c.Issuer, t0))
	tok2 := k2.sign(t, podClaims(c.Issuer, t0))
	ctx := context.Background()

	if _, err := v.Verify(ctx, c, tok1); err != nil {
		t.Fatal(err)
	}
	updated := *c
	updated.Keys.JWKS = jwks(t, k2)
	updated.ModifiedAt = t0.Add(time.Second)
	if _, err := v.Verify(ctx, &updated, tok2); err != nil {
		t.Fatalf("new key after update: %v", err)
	}
	if _, err := v.Verify(ctx, &updated, tok1); err == nil {
		t.Fatal("old key still verifies after update")
	}

	// The key source alone changing, as if ModifiedAt were not bumped.
	sameTime := updated
	sameTime.Keys.JWKS = jwks(t, k1)
	if _, err := v.Verify(ctx, &sameTime, tok1); err != nil {
		t.Fatalf("key source change without ModifiedAt: %v", err)
	}

	// Forget drops the keys; a broken source is then noticed.
	v.Forget("c")
	broken := sameTime
	broken.Keys.JWKS = `{"keys":[]}`
	_, err := v.Verify(ctx, &broken, tok1)
	if err == nil || codeOf(t, err) != identity.CodeInternal || !strings.Contains(errMessage(err), `cluster "c" has an invalid signing key source`) {
		t.Fatalf("Verify with broken inline JWKS: %v, want Internal", err)
	}
}

func TestCheckKeys(t *testing.T) {
	ek := testKey{kid: "e", priv: ecKey(t)}
	tests := []struct {
		name    string
		keys    identity.KeySource
		want    int
		wantErr string
	}{
		{name: "inline JWKS", keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, "cluster-a/jwks.json")}, want: 1},
		{name: "PEM", keys: identity.KeySource{Kind: identity.KeysPEM, PEM: pemPKIX(t, ek.priv.Public()) + pemPKIX(t, rsaKey(t, 0).Public())}, want: 2},
		{name: "bad inline JWKS", keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: `{"keys":[{"kty":"oct"}]}`},
			wantErr: `cluster "x": inline JWKS: JWKS has no usable RS256 or ES256 signing key`},
		{name: "bad PEM", keys: identity.KeySource{Kind: identity.KeysPEM, PEM: "x"}, wantErr: `cluster "x": PEM keys: no PEM public key found`},
		{name: "unknown kind", keys: identity.KeySource{Kind: "oidc"}, wantErr: `unknown key source kind "oidc"`},
		{name: "no kind", keys: identity.KeySource{}, wantErr: "no key source kind"},
		{name: "no file path", keys: identity.KeySource{Kind: identity.KeysJWKSFile}, wantErr: "JWKS file: no path"},
		{name: "kubernetes without URL", keys: identity.KeySource{Kind: identity.KeysKubernetes}, wantErr: "is not an absolute URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(VerifierConfig{Logger: discardLogger()})
			n, err := v.CheckKeys(context.Background(), &identity.Cluster{Name: "x", Keys: tt.keys})
			if tt.wantErr != "" {
				if err == nil || codeOf(t, err) != identity.CodeInvalidParameter || !strings.Contains(errMessage(err), tt.wantErr) {
					t.Fatalf("CheckKeys = %d, %v; want InvalidParameter %q", n, err, tt.wantErr)
				}
				return
			}
			if err != nil || n != tt.want {
				t.Fatalf("CheckKeys = %d, %v; want %d", n, err, tt.want)
			}
		})
	}
}

// A caller that gives up stops waiting; the fetch it started still lands in
// the cache for the next caller.
func TestCanceledWait(t *testing.T) {
	k1 := testKey{kid: "k1", priv: ecKey(t)}
	ks := newKeyServer(t, jwks(t, k1))
	release := make(chan struct{})
	ks.mu.Lock()
	ks.block = release
	ks.mu.Unlock()
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	c := urlCluster(ks)
	tok := k1.sign(t, podClaims(c.Issuer, t0))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := v.Verify(ctx, c, tok)
		done <- err
	}()
	for ks.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || codeOf(t, err) != identity.CodeServiceUnavailable {
		t.Fatalf("Verify with canceled context: %v", err)
	}
	close(release)
	// Wait for the orphaned fetch to land.
	for {
		v.mu.RLock()
		ent := v.cache[c.Name]
		v.mu.RUnlock()
		if ent != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := v.Verify(context.Background(), c, tok); err != nil {
		t.Fatal(err)
	}
	if n := ks.hits.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestJWKSURLRedirectToHTTPRefused(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("followed a redirect to plain http")
	}))
	defer plain.Close()
	redirector := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/keys", http.StatusFound))
	defer redirector.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: redirector.Certificate().Raw}))
	c := &identity.Cluster{Name: "u", Issuer: "https://u.test",
		Keys: identity.KeySource{Kind: identity.KeysJWKSURL, URL: redirector.URL + "/keys", CACert: ca}}

	v := NewVerifier(VerifierConfig{Logger: discardLogger()})
	_, err := v.CheckKeys(context.Background(), c)
	if err == nil || codeOf(t, err) != identity.CodeServiceUnavailable || !strings.Contains(errMessage(err), "not https") {
		t.Fatalf("CheckKeys error = %v, want a refused redirect", err)
	}
}
