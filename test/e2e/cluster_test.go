//go:build linux

package e2e

import (
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/test/e2e/harness"
)

// TestClusterRegistration checks what podid server holds for each cluster
// against what that cluster's API server serves: the issuer of its OIDC
// discovery document and the keys of /openid/v1/jwks. The issuer's own host
// does not resolve, so both must have been read through the API server.
func TestClusterRegistration(t *testing.T) {
	e := setup(t)
	t.Logf("environment started in %s", e.startup.Round(time.Second))
	for _, c := range []*harness.Cluster{e.a, e.b} {
		t.Run(c.Name, func(t *testing.T) {
			ctx := t.Context()
			disc, err := c.Discovery(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if disc.Issuer != c.Issuer {
				t.Errorf("API server's discovery issuer = %q, want the --service-account-issuer %q", disc.Issuer, c.Issuer)
			}
			// Without --service-account-jwks-uri the API server advertises
			// its own address; the issuer's host does not resolve here.
			if want := c.URL + "/openid/v1/jwks"; disc.JWKSURI != want {
				t.Errorf("jwks_uri = %q, want %q", disc.JWKSURI, want)
			}
			jwks, err := c.JWKS(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := keyIDs(t, jwks)
			if len(want) == 0 {
				t.Fatalf("the API server's JWKS has no keys: %s", jwks)
			}

			got, err := e.server.Client().DescribeCluster(ctx, c.Name)
			if err != nil {
				t.Fatalf("DescribeCluster(%s): %v", c.Name, err)
			}
			if got.Issuer != disc.Issuer {
				t.Errorf("registered issuer = %q, want the API server's %q", got.Issuer, disc.Issuer)
			}
			switch got.Keys.Kind {
			case identity.KeysJWKS:
				if diff := cmp.Diff(want, keyIDs(t, []byte(got.Keys.JWKS))); diff != "" {
					t.Errorf("registered JWKS key IDs differ from the API server's (-api server +podid):\n%s", diff)
				}
			case identity.KeysKubernetes:
				// Keys fetched from the API server at verification time.
				if got.Keys.URL != c.URL {
					t.Errorf("registered key source URL = %q, want the API server %q", got.Keys.URL, c.URL)
				}
			default:
				t.Errorf("registered key source kind = %q, want %q or %q (keys read through the API server)", got.Keys.Kind, identity.KeysJWKS, identity.KeysKubernetes)
			}
		})
	}
}

// keyIDs returns the sorted "kid/alg" of each key of a JWKS document.
func keyIDs(t *testing.T, jwks []byte) []string {
	t.Helper()
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
			Alg string `json:"alg"`
			Kty string `json:"kty"`
			N   string `json:"n"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &doc); err != nil {
		t.Fatalf("JWKS %q: %v", jwks, err)
	}
	var ids []string
	for _, k := range doc.Keys {
		ids = append(ids, k.Kid+"/"+k.Alg+"/"+k.Kty+"/"+k.N)
	}
	sort.Strings(ids)
	return ids
}
