package k8stest_test

import (
	"context"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/internal/k8s/k8stest"
)

// The minted tokens verify with podid's own verifier, for both algorithms.
func TestMintedTokensVerify(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		iss, err := k8stest.NewIssuer("https://test.podid", alg)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		tok, err := iss.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "checkout", Name: "web-1", NodeName: "node-1"}, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := &identity.Cluster{Name: "c", Issuer: iss.URL, Keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: iss.JWKS()}}
		claims, err := k8s.NewVerifier(k8s.VerifierConfig{}).Verify(context.Background(), c, tok)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if claims.PodName != "web-1" || claims.NodeName != "node-1" || claims.Namespace != "shop" || claims.ServiceAccountName != "checkout" {
			t.Errorf("%s: claims %+v", alg, claims)
		}
		expired, _ := iss.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "checkout", Name: "web-1"}, now.Add(-2*time.Hour), time.Hour)
		if _, err := k8s.NewVerifier(k8s.VerifierConfig{}).Verify(context.Background(), c, expired); identity.CodeOf(err) != identity.CodeExpiredToken {
			t.Errorf("%s: expired token gave %v", alg, err)
		}
	}
}
