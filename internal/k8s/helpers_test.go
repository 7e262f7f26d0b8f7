package k8s

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
)

const (
	fixtures = "../../testdata/kubernetes-1.37"
	issuerA  = "https://cluster-a.podid.test"
	issuerB  = "https://cluster-b.podid.test"
)

// fixtureNow is inside the validity window of every fixture token: 10
// minutes after cluster-a's tokens were minted, 9 after cluster-b's.
var fixtureNow = time.Unix(1795479714+600, 0)

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func clusterA(t testing.TB) *identity.Cluster {
	return &identity.Cluster{
		Name:       "a",
		Issuer:     issuerA,
		Keys:       identity.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, "cluster-a/jwks.json")},
		ModifiedAt: time.Unix(1700000000, 0),
	}
}

func clusterB(t testing.TB) *identity.Cluster {
	return &identity.Cluster{
		Name:       "b",
		Issuer:     issuerB,
		Keys:       identity.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, "cluster-b/jwks.json")},
		ModifiedAt: time.Unix(1700000000, 0),
	}
}

// fakeClock is an injectable clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// RSA key generation is slow enough to share keys between tests.
var (
	rsaMu   sync.Mutex
	rsaKeys []*rsa.PrivateKey
)

func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaMu.Lock()
	defer rsaMu.Unlock()
	for len(rsaKeys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys = append(rsaKeys, k)
	}
	return rsaKeys[i]
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testKey is a signing key of our own with the kid it is published under.
type testKey struct {
	kid  string
	priv crypto.Signer
}

func (k testKey) alg() string {
	if _, ok := k.priv.(*ecdsa.PrivateKey); ok {
		return AlgES256
	}
	return AlgRS256
}

// sign makes a token with header {alg, kid} and the given claims.
func (k testKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": k.alg()}
	if k.kid != "" {
		hdr["kid"] = k.kid
	}
	return signRaw(t, k.priv, hdr, claims)
}

func enc(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func signRaw(t testing.TB, priv crypto.Signer, hdr, claims map[string]any) string {
	t.Helper()
	in := enc(t, hdr) + "." + enc(t, claims)
	sum := sha256.Sum256([]byte(in))
	var sig []byte
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	default:
		t.Fatalf("unsupported key %T", priv)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwk is the key's public half as a JWKS entry.
func (k testKey) jwk() map[string]any {
	switch p := k.priv.Public().(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid,
			"n": b64u(p.N.Bytes()), "e": b64u(big.NewInt(int64(p.E)).Bytes())}
	case *ecdsa.PublicKey:
		ecdh, err := p.ECDH()
		if err != nil {
			panic(err)
		}
		raw := ecdh.Bytes() // 0x04 || X || Y
		return map[string]any{"kty": "EC", "use": "sig", "alg": "ES256", "kid": k.kid, "crv": "P-256",
			"x": b64u(raw[1:33]), "y": b64u(raw[33:])}
	}
	panic("unsupported key")
}

func jwks(t testing.TB, keys ...testKey) string {
	t.Helper()
	l := make([]map[string]any, len(keys))
	for i, k := range keys {
		l[i] = k.jwk()
	}
	b, err := json.Marshal(map[string]any{"keys": l})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pemPKIX(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// podClaims are valid claims of a pod-bound token minted at now; edit
// mutates them before use.
func podClaims(iss string, now time.Time, edit ...func(m map[string]any)) map[string]any {
	m := map[string]any{
		"iss": iss,
		"sub": "system:serviceaccount:shop:checkout",
		"aud": []string{identity.Audience},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"jti": "jti-1",
		"kubernetes.io": map[string]any{
			"namespace":      "shop",
			"serviceaccount": map[string]any{"name": "checkout", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "checkout-1", "uid": "pod-uid"},
			"node":           map[string]any{"name": "node-1", "uid": "node-uid"},
		},
	}
	for _, e := range edit {
		e(m)
	}
	return m
}

func k8sClaim(m map[string]any) map[string]any { return m["kubernetes.io"].(map[string]any) }

// keyServer serves a JWKS over TLS and counts the requests it gets.
type keyServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   string
	status int
	check  func(r *http.Request) int // status to refuse with, 0 to serve
	hits   atomic.Int32
	block  chan struct{} // when set, requests wait on it
}

func newKeyServer(t testing.TB, body string) *keyServer {
	t.Helper()
	ks := &keyServer{body: body, status: http.StatusOK}
	ks.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.hits.Add(1)
		ks.mu.Lock()
		body, status, check, block := ks.body, ks.status, ks.check, ks.block
		ks.mu.Unlock()
		if block != nil {
			<-block
		}
		if check != nil {
			if s := check(r); s != 0 {
				w.WriteHeader(s)
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) set(body string, status int) {
	ks.mu.Lock()
	ks.body, ks.status = body, status
	ks.mu.Unlock()
}

func (ks *keyServer) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ks.Certificate().Raw}))
}

// codeOf returns the identity code of err and fails the test when err is
// not an *identity.Error.
func codeOf(t testing.TB, err error) identity.Code {
	t.Helper()
	var ie *identity.Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *identity.Error", err, err)
	}
	return ie.Code
}

// errMessage is what a client would see.
func errMessage(err error) string {
	var ie *identity.Error
	if errors.As(err, &ie) {
		return ie.Message
	}
	return err.Error()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
