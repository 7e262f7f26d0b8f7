package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
)

// TestClusterRegisterLiveCheck runs `podid cluster register` against an
// emulated API server (discovery and JWKS) and an emulated podid server
// that records the cluster it is sent.
func TestClusterRegisterLiveCheck(t *testing.T) {
	const jwks = `{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}`
	kube := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer kube-admin" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			io.WriteString(w, `{"issuer":"https://issuer.test","jwks_uri":"https://issuer.test/openid/v1/jwks"}`)
		case "/openid/v1/jwks":
			io.WriteString(w, jwks)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(kube.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kube.Certificate().Raw})

	var (
		mu   sync.Mutex
		sent []api.Cluster
	)
	isolateAWSEnv(t)
	setKey(t, nil)
	podid := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The deprecated --key-file's key signs the request.
		if !strings.Contains(r.Header.Get("Authorization"), "Credential=AKIDADMIN/") {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var c api.Cluster
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		sent = append(sent, c)
		mu.Unlock()
		c.Keys.BearerToken = ""
		json.NewEncoder(w).Encode(api.ClusterResponse{Cluster: c})
	}))
	t.Cleanup(podid.Close)

	dir := t.TempDir()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: kube.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "kube-admin"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("key.json", `{"accessKeyId":"AKIDADMIN","secretAccessKey":"secret"}`)
	tokenFile := write("token-file", "reviewer-token\n")

	apiServer := api.KeySource{URL: kube.URL, BearerToken: "reviewer-token", CACert: string(ca)}
	with := func(k api.KeySource, edit func(*api.KeySource)) api.KeySource {
		edit(&k)
		return k
	}
	tests := []struct {
		name    string
		args    []string
		want    api.KeySource
		wantOut string
		wantErr string
	}{
		{name: "off", want: api.KeySource{Kind: identity.KeysJWKS, JWKS: jwks}},
		{name: "on", args: []string{"--live-check=on", "--bearer-token-file", tokenFile},
			want: with(apiServer, func(k *api.KeySource) {
				k.Kind, k.JWKS, k.LiveCheck = identity.KeysJWKS, jwks, identity.LiveCheckTokenReview
			}),
			wantOut: "live check: every token also checked by " + kube.URL + "/apis/authentication.k8s.io/v1/tokenreviews with the token from " + tokenFile},
		{name: "on, following rotation", args: []string{"--live-check", "on", "--follow-rotation", "--bearer-token-file", tokenFile},
			want: with(apiServer, func(k *api.KeySource) { k.Kind, k.LiveCheck = identity.KeysKubernetes, identity.LiveCheckTokenReview })},
		{name: "only", args: []string{"--live-check=only", "--bearer-token-file", tokenFile, "--api-server-url", "https://10.0.0.1:6443"},
			want:    with(apiServer, func(k *api.KeySource) { k.Kind, k.URL = identity.KeysTokenReview, "https://10.0.0.1:6443" }),
			wantOut: "keys:   tokenReview: none: podid server has every token checked by https://10.0.0.1:6443/apis/authentication.k8s.io/v1/tokenreviews"},
		{name: "only with follow-rotation", args: []string{"--live-check=only", "--follow-rotation", "--bearer-token-file", tokenFile}, wantErr: "--follow-rotation does not apply"},
		{name: "unknown mode", args: []string{"--live-check=sometimes"}, wantErr: `--live-check "sometimes" is not one of off, on, only`},
		{name: "on without a token", args: []string{"--live-check=on"}, wantErr: "--live-check on needs exactly one of --bearer-token-file and --service-account"},
		{name: "token without a use", args: []string{"--bearer-token-file", tokenFile}, wantErr: "only apply with --follow-rotation or --live-check"},
		{name: "plain http API server", args: []string{"--live-check=on", "--bearer-token-file", tokenFile, "--api-server-url", "http://10.0.0.1:8080"}, wantErr: "is not https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			sent = nil
			mu.Unlock()
			cmd := newClusterCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(io.Discard)
			cmd.SetArgs(append([]string{"register", "c", "--kubeconfig", kubeconfig, "--server", podid.URL, "--key-file", keyFile}, tt.args...))
			err := cmd.ExecuteContext(t.Context())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(sent) != 0 {
					t.Error("a refused command registered the cluster")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(sent) != 1 {
				t.Fatalf("%d registrations, want 1", len(sent))
			}
			if sent[0].Issuer != "https://issuer.test" {
				t.Errorf("issuer %q", sent[0].Issuer)
			}
			if diff := cmp.Diff(tt.want, sent[0].Keys); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q does not contain %q", out.String(), tt.wantOut)
			}
			if strings.Contains(out.String(), "reviewer-token") || strings.Contains(out.String(), "kube-admin") {
				t.Error("the output holds a token")
			}
		})
	}
}
