package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/internal/server"
	"github.com/podid/podid/internal/store/sqlite"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

const (
	testRegion  = "us-east-1"
	testAccount = "111122223333"
	testRole    = "arn:aws:iam::111122223333:role/checkout"
	fixtures    = "../../testdata/kubernetes-1.37/"
)

// tokenTime lies inside the validity window of the fixture tokens, which
// are expired in real time.
var tokenTime = time.Unix(1795480000, 0).UTC()

// clock is a settable clock for the token verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// env is a podid server wired from its real parts: SQLite store, JWKS
// verifier, STS issuer against the STS test server, SigV4 verification.
type env struct {
	url     string
	handler http.Handler
	logs    *syncBuffer // everything the server logged, at debug level
	store   *sqlite.Store
	sts     *ststest.Server
	clock   *clock
	keys    map[auth.Scope]auth.Key
	agent   auth.Key // bound to cluster-a only
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with a hook to change the service's and the
// server's config.
func newEnvWith(t testing.TB, mod func(*identity.Config, *server.Config)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "podid.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	stsSrv := ststest.New(t)
	issuer, err := sts.New(ctx, sts.Config{Endpoint: stsSrv.URL, Region: testRegion, Credentials: stsSrv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: tokenTime}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := identity.Config{
		Logger:   logger,
		Store:    st,
		Verifier: k8s.NewVerifier(k8s.VerifierConfig{Now: clk.Now, Logger: logger}),
		Issuer:   issuer,
		Region:   testRegion,
		Account:  testAccount,
	}
	scfg := server.Config{Logger: logger}
	if mod != nil {
		mod(&cfg, &scfg)
	}
	svc, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st, sts: stsSrv, clock: clk, keys: map[auth.Scope]auth.Key{}, logs: logs}
	var all []auth.Key
	for _, scope := range []auth.Scope{auth.ScopeAdmin, auth.ScopeReadOnly} {
		k, err := auth.GenerateKey(string(scope), scope, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.keys[scope] = k
		all = append(all, k)
	}
	if e.agent, err = auth.GenerateKey("agent-a", auth.ScopeAgent, []string{"cluster-a"}); err != nil {
		t.Fatal(err)
	}
	kr, err := auth.NewKeyring(append(all, e.agent))
	if err != nil {
		t.Fatal(err)
	}
	scfg.Service, scfg.Auth = svc, &auth.Verifier{Keys: kr}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	e.handler = srv.Handler()
	hs := httptest.NewServer(e.handler)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return e
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func creds(k auth.Key) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, "")
}

// eksClient is the real AWS SDK EKS client pointed at the server.
func (e *env) eksClient(k auth.Key) *eks.Client {
	return eks.New(eks.Options{
		BaseEndpoint:     aws.String(e.url),
		Region:           testRegion,
		Credentials:      creds(k),
		RetryMaxAttempts: 1,
	})
}

func (e *env) apiClient(k auth.Key) *api.Client {
	return &api.Client{Endpoint: e.url, Credentials: creds(k), Region: testRegion}
}

func (e *env) admin() *api.Client { return e.apiClient(e.keys[auth.ScopeAdmin]) }

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(fixtures + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// registerFixtureClusters registers cluster-a (RS256) and cluster-b (ES256)
// with the JWKS their API servers served.
func (e *env) registerFixtureClusters(t testing.TB) {
	t.Helper()
	for _, name := range []string{"cluster-a", "cluster-b"} {
		_, err := e.admin().RegisterCluster(context.Background(), api.Cluster{
			Name:   name,
			Issuer: "https://" + name + ".podid.test",
			Keys:   api.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, name+"/jwks.json")},
		})
		if err != nil {
			t.Fatalf("registering %s: %v", name, err)
		}
	}
}
