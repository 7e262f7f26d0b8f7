package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/internal/server"
)

// coldVerifier verifies each token with a fresh verifier, so every call
// parses the cluster's JWKS again: the cost after a restart or key change.
type coldVerifier struct{ cfg k8s.VerifierConfig }

func (c coldVerifier) Verify(ctx context.Context, cl *identity.Cluster, token string) (*identity.TokenClaims, error) {
	return k8s.NewVerifier(c.cfg).Verify(ctx, cl, token)
}

// BenchmarkAssumeRoleForPodIdentity is the whole server path: SigV4
// verification, token verification, store lookup, the STS round trip to
// the STS test server and the audit write, over loopback HTTP.
func BenchmarkAssumeRoleForPodIdentity(b *testing.B) {
	for _, mode := range []string{"warm", "cold"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnvWith(b, func(cfg *identity.Config, _ *server.Config) {
				if mode == "cold" {
					cfg.Verifier = coldVerifier{k8s.VerifierConfig{Now: func() time.Time { return tokenTime }}}
				}
			})
			e.registerFixtureClusters(b)
			e.createAssociation(b, "cluster-a", "shop", "checkout", nil)
			client := e.apiClient(e.agent)
			req := api.AssumeRoleForPodIdentityRequest{Token: fixture(b, "cluster-a/token-pod-bound.jwt")}
			ctx := context.Background()
			if _, err := client.AssumeRoleForPodIdentity(ctx, "cluster-a", req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := client.AssumeRoleForPodIdentity(ctx, "cluster-a", req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBareHandler is the floor: a net/http handler that reads the
// same body and writes a same-sized JSON answer over loopback.
func BenchmarkBareHandler(b *testing.B) {
	answer := make([]byte, 1100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	body := mustJSON(b, api.AssumeRoleForPodIdentityRequest{Token: fixture(b, "cluster-a/token-pod-bound.jwt")})
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Post(srv.URL+"/clusters/cluster-a/assume-role-for-pod-identity", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
