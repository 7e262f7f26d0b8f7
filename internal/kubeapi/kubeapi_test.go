package kubeapi

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const jwks = `{"keys":[{"kty":"EC","kid":"k1","crv":"P-256","x":"a","y":"b"},{"kty":"RSA","kid":"k2","n":"c","e":"AQAB"}]}`

// discoveryServer answers like kube-apiserver, behind an optional path
// prefix, to requests bearing token.
func discoveryServer(t *testing.T, prefix, token string, paths map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer " + token:
		case "Bearer forbidden":
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		body, ok := paths[strings.TrimPrefix(r.URL.Path, prefix)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func restConfig(srv *httptest.Server, host, token string) *rest.Config {
	return &rest.Config{Host: host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{
		CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}}
}

func TestDiscover(t *testing.T) {
	good := map[string]string{
		DiscoveryPath: `{"issuer":"https://kubernetes.default.svc","jwks_uri":"https://10.0.0.1:443/openid/v1/jwks"}`,
		JWKSPath:      jwks,
	}
	tests := []struct {
		name    string
		prefix  string
		token   string
		paths   map[string]string
		want    *Discovery
		wantErr string
	}{
		{name: "ok", token: "t", paths: good, want: &Discovery{Issuer: "https://kubernetes.default.svc", JWKSURI: "https://10.0.0.1:443/openid/v1/jwks", JWKS: []byte(jwks), KeyIDs: []string{"k1", "k2"}}},
		{name: "behind a path prefix", prefix: "/k8s/clusters/c-1", token: "t", paths: good,
			want: &Discovery{Issuer: "https://kubernetes.default.svc", JWKSURI: "https://10.0.0.1:443/openid/v1/jwks", JWKS: []byte(jwks), KeyIDs: []string{"k1", "k2"}}},
		{name: "forbidden", token: "forbidden", paths: good, wantErr: "needs the ClusterRole system:service-account-issuer-discovery"},
		{name: "unauthorized", token: "wrong", paths: good, wantErr: "rejected the kubeconfig's credentials (HTTP 401)"},
		{name: "not served", token: "t", paths: map[string]string{}, wantErr: "Kubernetes 1.21 or later"},
		{name: "no issuer", token: "t", paths: map[string]string{DiscoveryPath: `{}`, JWKSPath: jwks}, wantErr: "has no issuer"},
		{name: "discovery not JSON", token: "t", paths: map[string]string{DiscoveryPath: `<html>`, JWKSPath: jwks}, wantErr: "is not an OpenID discovery document"},
		{name: "JWKS not JSON", token: "t", paths: map[string]string{DiscoveryPath: good[DiscoveryPath], JWKSPath: `nope`}, wantErr: "is not a JWKS document"},
		{name: "empty JWKS", token: "t", paths: map[string]string{DiscoveryPath: good[DiscoveryPath], JWKSPath: `{"keys":[]}`}, wantErr: "holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := discoveryServer(t, tt.prefix, "t", tt.paths)
			got, err := Discover(context.Background(), restConfig(srv, srv.URL+tt.prefix, tt.token))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.token) && len(tt.token) > 3 {
					t.Errorf("error shows the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadAndCAPEM(t *testing.T) {
	dir := t.TempDir()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["a"] = &clientcmdapi.Cluster{Server: "https://a.example:6443", CertificateAuthorityData: []byte("CA-A")}
	cfg.Clusters["b"] = &clientcmdapi.Cluster{Server: "https://b.example:6443", CertificateAuthority: filepath.Join(dir, "b.crt")}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "tok"}
	cfg.Contexts["a"] = &clientcmdapi.Context{Cluster: "a", AuthInfo: "u"}
	cfg.Contexts["b"] = &clientcmdapi.Context{Cluster: "b", AuthInfo: "u"}
	cfg.CurrentContext = "a"
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.crt"), []byte("CA-B"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		context  string
		wantHost string
		wantCA   string
		wantErr  string
	}{
		{context: "", wantHost: "https://a.example:6443", wantCA: "CA-A"},
		{context: "b", wantHost: "https://b.example:6443", wantCA: "CA-B"},
		{context: "c", wantErr: `context "c" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.context, func(t *testing.T) {
			rc, err := Load(path, tt.context)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ca, err := CAPEM(rc)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Host != tt.wantHost || string(ca) != tt.wantCA || rc.BearerToken != "tok" {
				t.Errorf("host %q CA %q", rc.Host, ca)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing"), ""); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

func TestServiceAccountToken(t *testing.T) {
	exp := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	var gotSeconds int64
	c := fake.NewClientset()
	c.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "token" || a.GetNamespace() != "podid" {
			return true, nil, errors.New("unexpected request")
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest)
		gotSeconds = *tr.Spec.ExpirationSeconds
		tr = tr.DeepCopy()
		tr.Status = authenticationv1.TokenRequestStatus{Token: "minted", ExpirationTimestamp: metav1.NewTime(exp)}
		return true, tr, nil
	})
	tok, gotExp, err := ServiceAccountToken(context.Background(), c, "podid", "reader", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "minted" || !gotExp.Equal(exp) || gotSeconds != 48*3600 {
		t.Errorf("token %q expiry %s seconds %d", tok, gotExp, gotSeconds)
	}

	denied := fake.NewClientset()
	denied.PrependReactor("create", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, "reader", errors.New("no"))
	})
	_, _, err = ServiceAccountToken(context.Background(), denied, "podid", "reader", time.Hour)
	if err == nil || !strings.Contains(err.Error(), `forbidden: the caller needs RBAC "create" on serviceaccounts/token in namespace podid`) {
		t.Errorf("forbidden: %v", err)
	}
}
