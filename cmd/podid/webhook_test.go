package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/webhook/certs"
)

// webhookUnderTest is `podid webhook` started through its command with
// static certificate files, so no Kubernetes is needed.
type webhookUnderTest struct {
	url        string // https://127.0.0.1:<port>
	metricsURL string // http://127.0.0.1:<port>
	client     *http.Client
	done       chan error
}

func writeServingCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("test-ca", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{"podid-webhook.podid.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return certFile, keyFile, pool
}

func startWebhook(t *testing.T, server string, key auth.Key, extra ...string) *webhookUnderTest {
	t.Helper()
	certFile, keyFile, pool := writeServingCert(t)
	keyJSON, _ := json.Marshal(map[string]string{"accessKeyId": key.AccessKeyID, "secretAccessKey": key.SecretAccessKey})
	keyPath := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(keyPath, keyJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	listen, metrics := freeAddr(t), freeAddr(t)
	_, metricsPort, _ := strings.Cut(metrics, ":")
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"webhook", "--cluster-name", "demo", "--server", server, "--key-file", keyPath,
		"--listen", listen, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--metrics-host", "127.0.0.1", "--metrics-port", metricsPort, "--log-level", "error"}, extra...)
	w := &webhookUnderTest{
		url:        "https://" + listen,
		metricsURL: "http://" + metrics,
		client:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		done:       runCmd(t, ctx, args...),
	}
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// review sends an AdmissionReview for a pod of namespace shop running as sa.
func (w *webhookUnderTest) review(t *testing.T, sa string) *admissionv1.AdmissionResponse {
	t.Helper()
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "shop"},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "example.test/app:1"}}},
	}
	raw, _ := json.Marshal(pod)
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "2f1c9a4e-0000-4000-8000-000000000000",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "shop",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	resp, err := w.client.Post(w.url+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != "2f1c9a4e-0000-4000-8000-000000000000" || !out.Response.Allowed {
		t.Fatalf("response %+v", out.Response)
	}
	return out.Response
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWebhookEndToEnd: podid server with an association, podid webhook in
// front of it with static certificate files, and AdmissionReviews over
// HTTPS as the API server sends them.
func TestWebhookEndToEnd(t *testing.T) {
	cp := startControlPlane(t)
	iss, _ := k8stest.NewIssuer("https://demo.podid.test", "RS256")
	if _, err := cp.client(cp.admin).RegisterCluster(context.Background(), api.Cluster{Name: "demo", Issuer: iss.URL, Keys: api.KeySource{Kind: "jwks", JWKS: iss.JWKS()}}); err != nil {
		t.Fatal(err)
	}
	cp.associate(t, "demo", "shop", "web")

	w := startWebhook(t, cp.url, cp.readOnly, "--token-expiration", "2h", "--token-jitter", "0", "--credentials-uri", "http://[fd00:ec2::23]/v1/credentials")
	waitReady(t, w.metricsURL+"/readyz", w.done)
	if code, _ := get(t, w.client, w.url+"/readyz"); code != http.StatusOK {
		t.Errorf("HTTPS /readyz: %d", code)
	}

	t.Run("service account with an association", func(t *testing.T) {
		resp := w.review(t, "web")
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("no JSON patch: %+v", resp)
		}
		var ops []struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			t.Fatal(err)
		}
		patch := string(resp.Patch)
		for _, want := range []string{
			`"name":"AWS_CONTAINER_CREDENTIALS_FULL_URI","value":"http://[fd00:ec2::23]/v1/credentials"`,
			`"name":"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE","value":"/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"`,
			`"audience":"pods.eks.amazonaws.com","expirationSeconds":7200,"path":"eks-pod-identity-token"`,
		} {
			if !strings.Contains(patch, want) {
				t.Errorf("patch lacks %s:\n%s", want, patch)
			}
		}
		if len(ops) == 0 {
			t.Error("empty patch")
		}
	})
	t.Run("service account without one", func(t *testing.T) {
		resp := w.review(t, "batch")
		if resp.Patch != nil || resp.PatchType != nil {
			t.Errorf("patched: %s", resp.Patch)
		}
	})

	_, metrics := get(t, http.DefaultClient, w.metricsURL+"/metrics")
	for _, want := range []string{`podid_webhook_admissions_total{result="mutated"} 1`, `podid_webhook_admissions_total{result="skipped_no_association"} 1`, "podid_webhook_index_ready 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestWebhookColdCacheAdmitsUnmutated: with podid server failing, the
// webhook is alive but not ready, and admits pods unchanged with a warning.
func TestWebhookColdCacheAdmitsUnmutated(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"__type":"ServerException","message":"down"}`, http.StatusInternalServerError)
	}))
	defer broken.Close()
	k, _ := auth.GenerateKey("webhook", auth.ScopeReadOnly, nil)
	w := startWebhook(t, broken.URL, k)
	waitReady(t, w.metricsURL+"/healthz", w.done)

	if code, body := get(t, http.DefaultClient, w.metricsURL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d %s, want 503", code, body)
	}
	resp := w.review(t, "web")
	if resp.Patch != nil || len(resp.Warnings) == 0 {
		t.Errorf("cold cache: patch %s, warnings %q", resp.Patch, resp.Warnings)
	}
}

func TestWebhookRejectsBadSettings(t *testing.T) {
	k, _ := auth.GenerateKey("webhook", auth.ScopeReadOnly, nil)
	base := []string{"webhook", "--cluster-name", "demo", "--server", "http://127.0.0.1:1", "--listen", "127.0.0.1:0", "--metrics-port", "0"}
	tests := []struct {
		name    string
		args    []string
		noKey   bool
		wantErr string
	}{
		{name: "no cluster", args: []string{"--cluster-name", ""}, wantErr: "--cluster-name is required"},
		{name: "no server", args: []string{"--server", ""}, wantErr: "--server is required"},
		{name: "jitter out of range", args: []string{"--token-jitter", "1.5"}, wantErr: "token settings: webhook: token jitter 1.5 is not in [0, 1)"},
		{name: "token too short", args: []string{"--token-expiration", "5m"}, wantErr: "below the API server's minimum"},
		{name: "relative mount path", args: []string{"--mount-path", "var/run"}, wantErr: "is not a clean absolute path"},
		{name: "no key", noKey: true, wantErr: "set PODID_WEBHOOK_ACCESS_KEY_ID and PODID_WEBHOOK_SECRET_ACCESS_KEY"},
		{name: "two TLS modes", args: []string{"--tls-secret", "x", "--cert-dir", "/tmp"}, wantErr: "give only one of"},
		{name: "cert without key", args: []string{"--tls-cert-file", "x.crt"}, wantErr: "--tls-cert-file and --tls-key-file must be given together"},
		{name: "missing cert dir", args: []string{"--cert-dir", "/nonexistent"}, wantErr: "/nonexistent/tls.crt"},
		{name: "no kubeconfig for managed certificates", args: []string{"--kubeconfig", "/nonexistent/kubeconfig"}, wantErr: "or serve static files with --tls-cert-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PODID_WEBHOOK_ACCESS_KEY_ID", "")
			t.Setenv("PODID_WEBHOOK_SECRET_ACCESS_KEY", "")
			if !tt.noKey {
				t.Setenv("PODID_WEBHOOK_ACCESS_KEY_ID", k.AccessKeyID)
				t.Setenv("PODID_WEBHOOK_SECRET_ACCESS_KEY", k.SecretAccessKey)
			}
			_, err := podid(t, append(append([]string(nil), base...), tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}
