package server_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
)

// fixtureRSAKey returns cluster-a's public signing key from its JWKS.
func fixtureRSAKey(t *testing.T) *rsa.PublicKey {
	t.Helper()
	var jwks struct {
		Keys []struct{ N, E string }
	}
	if err := json.Unmarshal([]byte(fixture(t, "cluster-a/jwks.json")), &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("jwks: %v", err)
	}
	n, err1 := base64.RawURLEncoding.DecodeString(jwks.Keys[0].N)
	e, err2 := base64.RawURLEncoding.DecodeString(jwks.Keys[0].E)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
}

func TestClusterAdminAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin := e.admin()
	token := fixture(t, "cluster-a/token-pod-bound.jwt")

	der, err := x509.MarshalPKIXPublicKey(fixtureRSAKey(t))
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	// Keys from the cluster's own /openid/v1/jwks endpoint, behind a bearer
	// token and a private CA.
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openid/v1/jwks" || r.Header.Get("Authorization") != "Bearer sa-reader-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write([]byte(fixture(t, "cluster-a/jwks.json")))
	}))
	defer apiserver.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiserver.Certificate().Raw}))

	for _, tc := range []struct {
		name string
		keys api.KeySource
	}{
		{"pem", api.KeySource{Kind: identity.KeysPEM, PEM: pemKey}},
		{"kubernetes", api.KeySource{Kind: identity.KeysKubernetes, URL: apiserver.URL, BearerToken: "sa-reader-token", CACert: ca}},
		{"jwks", api.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, "cluster-a/jwks.json")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := admin.RegisterCluster(ctx, api.Cluster{Name: "cluster-a", Issuer: "https://cluster-a.podid.test", Keys: tc.keys})
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if c.Keys.BearerToken != "" {
				t.Error("the bearer token was echoed back")
			}
			if c.Arn != "arn:aws:eks:us-east-1:111122223333:cluster/cluster-a" {
				t.Errorf("cluster ARN %q", c.Arn)
			}
			e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
			if _, err := e.apiClient(e.agent).AssumeRoleForPodIdentity(ctx, "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: token}); err != nil {
				t.Fatalf("assume with %s keys: %v", tc.name, err)
			}
			// Deleting the cluster deletes its associations.
			if err := admin.DeleteCluster(ctx, "cluster-a"); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.DescribeCluster(ctx, "cluster-a"); api.ErrorType(err) != "ResourceNotFoundException" {
				t.Fatalf("describe after delete: %v", err)
			}
			as, _ := e.store.ListAssociations(ctx, identity.AssociationFilter{Cluster: "cluster-a"})
			if len(as) != 0 {
				t.Errorf("%d associations survived their cluster", len(as))
			}
		})
	}

	// A wrong bearer token is caught at registration, not at the first pod.
	_, err = admin.RegisterCluster(ctx, api.Cluster{Name: "bad", Issuer: "https://x", Keys: api.KeySource{Kind: identity.KeysKubernetes, URL: apiserver.URL, BearerToken: "wrong", CACert: ca}})
	if api.ErrorType(err) != "InvalidParameterException" {
		t.Errorf("register with a wrong bearer token: %v", err)
	}

	// Update: a new issuer makes the old tokens fail; the old one back makes them work.
	e.registerFixtureClusters(t)
	e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	upd, err := admin.UpdateCluster(ctx, api.Cluster{Name: "cluster-a", Issuer: "https://elsewhere", Keys: api.KeySource{Kind: identity.KeysJWKS, JWKS: fixture(t, "cluster-a/jwks.json")}})
	if err != nil || upd.Issuer != "https://elsewhere" {
		t.Fatalf("update: %+v, %v", upd, err)
	}
	_, err = e.apiClient(e.agent).AssumeRoleForPodIdentity(ctx, "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: token})
	if api.ErrorType(err) != "InvalidTokenException" {
		t.Errorf("token of the old issuer: %v", err)
	}
	list, err := admin.ListClusters(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "cluster-a" || list[1].Name != "cluster-b" {
		t.Errorf("list: %+v, %v", list, err)
	}
	// Read-only keys may read clusters; the association API still sees them.
	if _, err := e.apiClient(e.keys[auth.ScopeReadOnly]).DescribeCluster(ctx, "cluster-b"); err != nil {
		t.Errorf("read-only describe: %v", err)
	}
	if _, err := e.eksClient(e.keys[auth.ScopeReadOnly]).ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-b")}); err != nil {
		t.Errorf("read-only list: %v", err)
	}
}
