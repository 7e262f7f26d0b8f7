package server_test

import (
	"net/http"
	"testing"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/ratelimit"
	"github.com/podid/podid/internal/server"
)

// TestRateLimits: a key over its limit and a namespace over its limit get
// 429 ThrottlingException in AWS shape; other namespaces and keys go on.
func TestRateLimits(t *testing.T) {
	lim := ratelimit.New(ratelimit.Config{PerKey: 0.001, KeyBurst: 6, PerNamespace: 0.001, NamespaceBurst: 2, MaxConcurrent: 4})
	e := newEnvWith(t, func(cfg *identity.Config, scfg *server.Config) {
		cfg.Limiter = lim
		scfg.KeyLimiter = lim
	})
	iss, err := k8stest.NewIssuer("https://limits.test", "RS256")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin().RegisterCluster(t.Context(), api.Cluster{Name: "cluster-a", Issuer: iss.URL, Keys: api.KeySource{Kind: identity.KeysJWKS, JWKS: iss.JWKS()}}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"noisy", "quiet", "third"} {
		e.createAssociation(t, "cluster-a", ns, "app", nil)
	}
	call := func(k auth.Key, ns string) (int, string) {
		tok, err := iss.Token(k8stest.Pod{Namespace: ns, ServiceAccount: "app", Name: ns + "-pod"}, tokenTime, 0x7fffffff)
		if err != nil {
			t.Fatal(err)
		}
		status, typ, _ := e.postAssume(t, k, "cluster-a", mustJSON(t, api.AssumeRoleForPodIdentityRequest{Token: tok}))
		return status, typ
	}
	for i := range 2 {
		if s, typ := call(e.agent, "noisy"); s != http.StatusOK {
			t.Fatalf("noisy call %d within its burst: %d %s", i, s, typ)
		}
	}
	if s, typ := call(e.agent, "noisy"); s != http.StatusTooManyRequests || typ != "ThrottlingException" {
		t.Fatalf("namespace over its limit: %d %s", s, typ)
	}
	if s, typ := call(e.agent, "quiet"); s != http.StatusOK {
		t.Fatalf("a quiet namespace was throttled with the noisy one: %d %s", s, typ)
	}
	// The agent key has used 4 of its 6; two more pass, then it is limited.
	call(e.agent, "quiet")
	call(e.agent, "noisy")
	if s, typ := call(e.agent, "quiet"); s != http.StatusTooManyRequests || typ != "ThrottlingException" {
		t.Fatalf("key over its limit: %d %s", s, typ)
	}
	// Another key is not limited by the first one's use.
	if s, typ := call(e.keys[auth.ScopeAdmin], "third"); s != http.StatusOK {
		t.Fatalf("admin key throttled by the agent key's use: %d %s", s, typ)
	}
}
