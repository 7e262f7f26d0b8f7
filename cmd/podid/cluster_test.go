package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/sts/ststest"
)

// controlPlane is `podid server` started through its command, with the STS
// test server behind it and one key of each scope.
type controlPlane struct {
	url                    string
	admin, readOnly, agent auth.Key
	sts                    *ststest.Server
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	cp := &controlPlane{sts: ststest.New(t)}
	cp.admin, _ = auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	cp.readOnly, _ = auth.GenerateKey("webhook", auth.ScopeReadOnly, nil)
	cp.agent, _ = auth.GenerateKey("agent", auth.ScopeAgent, []string{auth.AllClusters})
	keys, _ := json.Marshal(map[string]any{"keys": []auth.Key{cp.admin, cp.readOnly, cp.agent}})
	keysFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keysFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	stsCreds, _ := cp.sts.Credentials().Retrieve(context.Background())
	t.Setenv("AWS_ACCESS_KEY_ID", stsCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", stsCreds.SecretAccessKey)
	isolateAWSEnv(t)
	// The cluster commands read the shared client settings from
	// PODID_<FLAG>; a developer's must not leak in.
	for _, k := range append(clientFlagEnv, "access-key-id", "secret-access-key") {
		k = "PODID_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := runCmd(t, ctx, "server", "--listen", addr, "--data-dir", dir, "--keys-file", keysFile,
		"--sts-endpoint", cp.sts.URL, "--account", "111122223333", "--log-level", "error")
	t.Cleanup(func() { cancel(); <-done })
	cp.url = "http://" + addr
	waitHealthy(t, cp.url, done)
	return cp
}

func (cp *controlPlane) client(k auth.Key) *api.Client {
	return &api.Client{Endpoint: cp.url, Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, "")}
}

func (cp *controlPlane) associate(t *testing.T, cluster, namespace, sa string) {
	t.Helper()
	c := eks.New(eks.Options{BaseEndpoint: aws.String(cp.url), Region: "us-east-1", Credentials: cp.client(cp.admin).Credentials})
	if _, err := c.CreatePodIdentityAssociation(context.Background(), &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(cluster), Namespace: aws.String(namespace), ServiceAccount: aws.String(sa),
		RoleArn: aws.String("arn:aws:iam::111122223333:role/" + sa),
	}); err != nil {
		t.Fatal(err)
	}
}

// assume exchanges a token minted by iss for credentials, as the agent does.
func (cp *controlPlane) assume(t *testing.T, cluster string, iss *k8stest.Issuer) error {
	t.Helper()
	tok, err := iss.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-1", NodeName: "node-1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cp.client(cp.agent).AssumeRoleForPodIdentity(context.Background(), cluster, api.AssumeRoleForPodIdentityRequest{Token: tok})
	return err
}

const (
	privateIssuer = "https://kubernetes.default.svc.cluster.local"
	userToken     = "kubeconfig-user-token-d0n7pr1n7"
	saToken       = "minted-sa-token-d0n7pr1n7"
)

// fakeAPIServer serves the two issuer discovery paths and TokenRequest the
// way kube-apiserver does, with bearer-token authentication.
type fakeAPIServer struct {
	*httptest.Server
	mu        sync.Mutex
	issuer    *k8stest.Issuer
	tokens    map[string]int // bearer token -> status for discovery (200, 403)
	discovery bool           // false: 404 for discovery, as before 1.21
	jwksBy    []string       // the bearer token of each JWKS request
	tokenReqs []string       // namespace/name of each TokenRequest
	denyTR    bool
}

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	iss, err := k8stest.NewIssuer(privateIssuer, "RS256")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPIServer{issuer: iss, tokens: map[string]int{userToken: 200, saToken: 200}, discovery: true}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPIServer) setIssuer(iss *k8stest.Issuer) { f.mu.Lock(); f.issuer = iss; f.mu.Unlock() }

// allow makes the API server answer discovery for token with status.
func (f *fakeAPIServer) allow(token string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[token] = status
}

func (f *fakeAPIServer) status(r *http.Request) int {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return http.StatusUnauthorized
	}
	st, known := f.tokens[tok]
	if !known {
		return http.StatusUnauthorized
	}
	return st
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status(r)
	if st != http.StatusOK {
		http.Error(w, http.StatusText(st), st)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/.well-known/openid-configuration" && f.discovery:
		json.NewEncoder(w).Encode(map[string]any{"issuer": f.issuer.URL, "jwks_uri": f.issuer.URL + "/openid/v1/jwks",
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"}})
	case r.Method == http.MethodGet && r.URL.Path == "/openid/v1/jwks" && f.discovery:
		f.jwksBy = append(f.jwksBy, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Write([]byte(f.issuer.JWKS()))
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/") && strings.HasSuffix(r.URL.Path, "/token"):
		parts := strings.Split(r.URL.Path, "/") // "", api, v1, namespaces, ns, serviceaccounts, name, token
		if f.denyTR {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
				"message": `serviceaccounts "` + parts[6] + `" is forbidden: User "alice" cannot create resource "serviceaccounts/token"`})
			return
		}
		var req struct {
			Spec struct {
				ExpirationSeconds int64 `json:"expirationSeconds"`
			} `json:"spec"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		f.tokenReqs = append(f.tokenReqs, parts[4]+"/"+parts[6])
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
			"metadata": map[string]any{"name": parts[6], "namespace": parts[4]},
			"spec":     map[string]any{"expirationSeconds": req.Spec.ExpirationSeconds},
			"status":   map[string]any{"token": saToken, "expirationTimestamp": time.Now().Add(time.Duration(req.Spec.ExpirationSeconds) * time.Second).UTC().Format(time.RFC3339)}})
	default:
		http.NotFound(w, r)
	}
}

// kubeconfig writes a kubeconfig for the fake API server with token.
func (f *fakeAPIServer) kubeconfig(t *testing.T, token string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["fake"] = &clientcmdapi.Cluster{Server: f.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos["alice"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["fake"] = &clientcmdapi.Context{Cluster: "fake", AuthInfo: "alice"}
	cfg.Contexts["other"] = &clientcmdapi.Context{Cluster: "fake", AuthInfo: "nobody"}
	cfg.AuthInfos["nobody"] = &clientcmdapi.AuthInfo{Token: "unknown-token"}
	cfg.CurrentContext = "fake"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// podid runs one podid command to completion and returns its output.
func podid(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := NewRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// useAdminKey puts k where the AWS credential chain finds it. (The
// server under test resolved its own STS credentials at start.)
func useAdminKey(t *testing.T, k auth.Key) {
	t.Helper()
	setKey(t, &k)
}

// assertNoSecrets fails when s shows a token or secret of the test.
func assertNoSecrets(t *testing.T, s string, cp *controlPlane) {
	t.Helper()
	for _, secret := range []string{userToken, saToken, "file-token-d0n7pr1n7", cp.admin.SecretAccessKey, cp.readOnly.SecretAccessKey} {
		if strings.Contains(s, secret) {
			t.Errorf("output shows a secret: %q", s)
		}
	}
}

// TestClusterRegisterSnapshot registers a cluster with a private issuer
// through the API server, uses it, updates it after a key rotation, lists
// and deletes it.
func TestClusterRegisterSnapshot(t *testing.T) {
	cp := startControlPlane(t)
	apiserver := newFakeAPIServer(t)
	kc := apiserver.kubeconfig(t, userToken)
	useAdminKey(t, cp.admin)

	out, err := podid(t, "cluster", "register", "demo", "--kubeconfig", kc, "--server", cp.url)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	assertNoSecrets(t, out, cp)
	for _, want := range []string{`registered cluster "demo"`, "issuer: " + privateIssuer, "jwks: snapshot of 1 key(s) (" + apiserver.issuer.KeyID + ")"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	cp.associate(t, "demo", "shop", "web")
	old := apiserver.issuer
	if err := cp.assume(t, "demo", old); err != nil {
		t.Fatalf("token of the registered issuer refused: %v", err)
	}

	out, err = podid(t, "cluster", "register", "demo", "--kubeconfig", kc, "--server", cp.url)
	if err == nil || !strings.Contains(err.Error(), "add --update") || exitCode(err) != exitConflict {
		t.Fatalf("second register: exit %d, %v\n%s", exitCode(err), err, out)
	}

	rotated, _ := k8stest.NewIssuer(privateIssuer, "ES256")
	apiserver.setIssuer(rotated)
	if err := cp.assume(t, "demo", rotated); api.ErrorType(err) != "InvalidTokenException" {
		t.Fatalf("token of the new key before --update: %v", err)
	}
	out, err = podid(t, "cluster", "register", "demo", "--kubeconfig", kc, "--server", cp.url, "--update")
	if err != nil || !strings.Contains(out, `updated cluster "demo"`) {
		t.Fatalf("update: %v\n%s", err, out)
	}
	if err := cp.assume(t, "demo", rotated); err != nil {
		t.Fatalf("token of the new key after --update: %v", err)
	}

	out, err = podid(t, "cluster", "list", "--server", cp.url)
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(out, "demo", privateIssuer, "jwks") {
		t.Errorf("list:\n%s", out)
	}
	assertNoSecrets(t, out, cp)

	if out, err = podid(t, "cluster", "delete", "demo", "--server", cp.url); err != nil || !strings.Contains(out, `deleted cluster "demo"`) {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, _ = podid(t, "cluster", "list", "--server", cp.url); strings.Contains(out, "demo") {
		t.Errorf("list after delete:\n%s", out)
	}
	if _, err = podid(t, "cluster", "delete", "demo", "--server", cp.url); exitCode(err) != exitNotFound {
		t.Errorf("deleting a deleted cluster: exit %d (%v), want %d", exitCode(err), err, exitNotFound)
	}
	if out, err = podid(t, "cluster", "register", "demo", "--kubeconfig", kc, "--server", cp.url, "--update"); exitCode(err) != exitNotFound ||
		!strings.Contains(err.Error(), "run without --update") {
		t.Errorf("updating an unregistered cluster: exit %d, %v\n%s", exitCode(err), err, out)
	}
}

// regexpLine reports whether one line of out holds every field in order.
func regexpLine(out string, fields ...string) bool {
	for line := range strings.Lines(out) {
		rest, ok := line, true
		for _, f := range fields {
			var found bool
			_, rest, found = strings.Cut(rest, f)
			ok = ok && found
		}
		if ok {
			return true
		}
	}
	return false
}

// TestClusterRegisterFollowRotation registers with key kind kubernetes:
// podid server then fetches the keys from the API server itself, with the
// token this command minted or was given.
func TestClusterRegisterFollowRotation(t *testing.T) {
	cp := startControlPlane(t)
	apiserver := newFakeAPIServer(t)
	kc := apiserver.kubeconfig(t, userToken)
	useAdminKey(t, cp.admin)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("file-token-d0n7pr1n7\n"), 0o600)
	apiserver.allow("file-token-d0n7pr1n7", http.StatusOK)

	tests := []struct {
		name      string
		args      []string
		wantToken string
		wantOut   string
	}{
		{name: "minted for a service account", args: []string{"--service-account", "podid/jwks-reader", "--token-expiration", "720h"},
			wantToken: saToken, wantOut: "a token of ServiceAccount podid/jwks-reader expiring "},
		{name: "token file", args: []string{"--bearer-token-file", tokenFile}, wantToken: "file-token-d0n7pr1n7", wantOut: "the token from " + tokenFile},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := []string{"follow-a", "follow-b"}[i]
			apiserver.mu.Lock()
			apiserver.jwksBy = nil
			apiserver.mu.Unlock()
			out, err := podid(t, append([]string{"cluster", "register", name, "--kubeconfig", kc, "--server", cp.url, "--follow-rotation"}, tt.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			assertNoSecrets(t, out, cp)
			for _, want := range []string{"kubernetes: podid server fetches " + apiserver.URL + "/openid/v1/jwks with ", tt.wantOut} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			cp.associate(t, name, "shop", "web")
			if err := cp.assume(t, name, apiserver.issuer); err != nil {
				t.Fatalf("token refused: %v", err)
			}
			apiserver.mu.Lock()
			defer apiserver.mu.Unlock()
			// The command's own discovery uses the kubeconfig's token; podid
			// server's fetches use the registered one.
			if len(apiserver.jwksBy) < 2 || apiserver.jwksBy[0] != userToken || apiserver.jwksBy[len(apiserver.jwksBy)-1] != tt.wantToken {
				t.Errorf("JWKS fetched with tokens %q, want the kubeconfig's then the registered one", apiserver.jwksBy)
			}
		})
	}
	if got := apiserver.tokenReqs; len(got) != 1 || got[0] != "podid/jwks-reader" {
		t.Errorf("TokenRequests %q", got)
	}
	out, err := podid(t, "cluster", "list", "--server", cp.url)
	if err != nil || !regexpLine(out, "follow-a", privateIssuer, "kubernetes "+apiserver.URL) {
		t.Errorf("list: %v\n%s", err, out)
	}
}

func TestClusterRegisterErrorsSayWhatToDo(t *testing.T) {
	cp := startControlPlane(t)
	apiserver := newFakeAPIServer(t)
	apiserver.allow("forbidden-user", http.StatusForbidden)
	kc := apiserver.kubeconfig(t, userToken)
	forbidden := apiserver.kubeconfig(t, "forbidden-user")
	tests := []struct {
		name     string
		args     []string
		key      *auth.Key
		setup    func()
		wantErr  string
		wantCode int
	}{
		{name: "no RBAC for discovery", args: []string{"--kubeconfig", forbidden}, key: &cp.admin,
			wantErr: "the kubeconfig's user needs the ClusterRole system:service-account-issuer-discovery", wantCode: exitDenied},
		{name: "unknown kubeconfig user", args: []string{"--kubeconfig", kc, "--context", "other"}, key: &cp.admin,
			wantErr: "the API server rejected the kubeconfig's credentials (HTTP 401)", wantCode: exitDenied},
		{name: "discovery not served", args: []string{"--kubeconfig", kc}, key: &cp.admin,
			setup: func() { apiserver.discovery = false }, wantErr: "needs Kubernetes 1.21 or later"},
		{name: "unknown context", args: []string{"--kubeconfig", kc, "--context", "nope"}, key: &cp.admin, wantErr: `context "nope" does not exist`, wantCode: exitUsage},
		{name: "follow rotation without a token", args: []string{"--kubeconfig", kc, "--follow-rotation"}, key: &cp.admin,
			wantErr: "--follow-rotation needs exactly one of --bearer-token-file and --service-account", wantCode: exitUsage},
		{name: "token flag without follow rotation", args: []string{"--kubeconfig", kc, "--service-account", "a/b"}, key: &cp.admin,
			wantErr: "only apply with --follow-rotation"},
		{name: "bad service account", args: []string{"--kubeconfig", kc, "--follow-rotation", "--service-account", "reader"}, key: &cp.admin,
			wantErr: `--service-account "reader" is not NAMESPACE/NAME`},
		{name: "no TokenRequest RBAC", args: []string{"--kubeconfig", kc, "--follow-rotation", "--service-account", "podid/reader"}, key: &cp.admin,
			setup: func() { apiserver.denyTR = true }, wantErr: `the caller needs RBAC "create" on serviceaccounts/token in namespace podid`, wantCode: exitDenied},
		{name: "plain http API server URL", args: []string{"--kubeconfig", kc, "--follow-rotation", "--service-account", "podid/reader", "--api-server-url", "http://10.0.0.1"},
			key: &cp.admin, wantErr: "is not https"},
		{name: "read-only key", args: []string{"--kubeconfig", kc}, key: &cp.readOnly, wantErr: "the key needs admin scope", wantCode: exitDenied},
		{name: "unknown key", args: []string{"--kubeconfig", kc}, key: &auth.Key{AccessKeyID: "PODIDUNKNOWNKEY00000", SecretAccessKey: "x"},
			wantErr: "podid server does not know this access key", wantCode: exitDenied},
		{name: "wrong secret", args: []string{"--kubeconfig", kc}, key: &auth.Key{AccessKeyID: cp.admin.AccessKeyID, SecretAccessKey: "wrong"},
			wantErr: "the secret access key does not match", wantCode: exitDenied},
		{name: "no key", args: []string{"--kubeconfig", kc}, wantErr: "put a podid access key", wantCode: exitDenied},
		{name: "no server", args: []string{"--kubeconfig", kc, "--server", ""}, key: &cp.admin, wantErr: "--server is required", wantCode: exitUsage},
		{name: "server unreachable", args: []string{"--kubeconfig", kc, "--server", "http://" + freeAddr(t)}, key: &cp.admin,
			wantErr: "cannot reach podid server", wantCode: exitUnavailable},
		{name: "bad output", args: []string{"--kubeconfig", kc, "-o", "xml"}, key: &cp.admin, wantErr: `-o "xml"`, wantCode: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apiserver.mu.Lock()
			apiserver.discovery, apiserver.denyTR = true, false
			if tt.setup != nil {
				tt.setup()
			}
			apiserver.mu.Unlock()
			setKey(t, tt.key)
			out, err := podid(t, append([]string{"cluster", "register", "demo", "--server", cp.url}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v\nwant %q\n%s", err, tt.wantErr, out)
			}
			if tt.wantCode != 0 && exitCode(err) != tt.wantCode {
				t.Errorf("exit %d, want %d (%v)", exitCode(err), tt.wantCode, err)
			}
			assertNoSecrets(t, err.Error()+out, cp)
		})
	}
	if out, _ := podid(t, "cluster", "list", "--server", cp.url); strings.Contains(out, "demo") {
		t.Errorf("a failed registration registered:\n%s", out)
	}
}

// TestClusterCredentialSchemes checks that the cluster commands take the
// client commands' settings: PODID_SERVER, the AWS credential chain with
// --profile, -o, and the deprecated --key-file.
func TestClusterCredentialSchemes(t *testing.T) {
	cp := startControlPlane(t)
	iss, err := k8stest.NewIssuer("https://prod.test", "RS256")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.client(cp.admin).RegisterCluster(context.Background(), api.Cluster{Name: "prod", Issuer: iss.URL,
		Keys: api.KeySource{Kind: "jwks", JWKS: iss.JWKS()}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODID_SERVER", cp.url)
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("[viewer]\naws_access_key_id = "+cp.readOnly.AccessKeyID+"\naws_secret_access_key = "+cp.readOnly.SecretAccessKey+"\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	keyFile := filepath.Join(dir, "key.json")
	raw, _ := json.Marshal(map[string]string{"accessKeyId": cp.admin.AccessKeyID, "secretAccessKey": cp.admin.SecretAccessKey})
	os.WriteFile(keyFile, raw, 0o600)

	t.Run("profile", func(t *testing.T) {
		setKey(t, nil)
		out, err := podid(t, "cluster", "list", "--profile", "viewer")
		if err != nil || !regexpLine(out, "prod", "https://prod.test", "jwks") {
			t.Fatalf("list: %v\n%s", err, out)
		}
		// A read-only key may list but not delete.
		if _, err := podid(t, "cluster", "delete", "prod", "--profile", "viewer"); exitCode(err) != exitDenied {
			t.Errorf("delete with a read-only key: exit %d (%v)", exitCode(err), err)
		}
		if _, err := podid(t, "cluster", "list", "--profile", "nope"); exitCode(err) == exitOK {
			t.Error("an unknown profile listed")
		}
	})
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			useAdminKey(t, cp.admin)
			out, err := podid(t, "cluster", "list", "-o", format)
			if err != nil {
				t.Fatal(err)
			}
			var got api.ListClustersResponse
			if format == "json" {
				err = json.Unmarshal([]byte(out), &got)
			} else {
				err = yaml.Unmarshal([]byte(out), &got)
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if len(got.Clusters) != 1 || got.Clusters[0].Name != "prod" || got.Clusters[0].Issuer != "https://prod.test" || got.Clusters[0].Keys.Kind != "jwks" {
				t.Errorf("clusters %+v", got.Clusters)
			}
		})
	}
	t.Run("PODID_OUTPUT", func(t *testing.T) {
		useAdminKey(t, cp.admin)
		t.Setenv("PODID_OUTPUT", "json")
		out, err := podid(t, "cluster", "list")
		if err != nil || !json.Valid([]byte(out)) {
			t.Errorf("list: %v\n%s", err, out)
		}
	})
	t.Run("deprecated key file", func(t *testing.T) {
		setKey(t, &cp.readOnly) // --key-file wins over the chain
		out, err := podid(t, "cluster", "delete", "prod", "--key-file", keyFile)
		if err != nil || !strings.Contains(out, `deleted cluster "prod"`) || !strings.Contains(out, "--key-file has been deprecated") {
			t.Fatalf("delete: %v\n%s", err, out)
		}
		assertNoSecrets(t, out, cp)
		if _, err := podid(t, "cluster", "list", "--key-file", filepath.Join(dir, "missing.json")); exitCode(err) != exitUsage {
			t.Errorf("missing key file: exit %d (%v)", exitCode(err), err)
		}
		if _, err := podid(t, "cluster", "list", "--key-file", keyFile, "--profile", "viewer"); exitCode(err) != exitUsage {
			t.Errorf("--key-file with --profile: exit %d (%v)", exitCode(err), err)
		}
	})
	t.Run("old environment variables warn", func(t *testing.T) {
		setKey(t, nil)
		t.Setenv("PODID_ACCESS_KEY_ID", cp.admin.AccessKeyID)
		t.Setenv("PODID_SECRET_ACCESS_KEY", cp.admin.SecretAccessKey)
		out, err := podid(t, "cluster", "list")
		if exitCode(err) != exitDenied || !strings.Contains(out, "PODID_ACCESS_KEY_ID and PODID_SECRET_ACCESS_KEY are no longer read") {
			t.Errorf("exit %d (%v)\n%s", exitCode(err), err, out)
		}
	})
}

// TestClusterRegisterAPIServerUnreachable checks that a cluster whose API
// server is down is not reported as podid server being down.
func TestClusterRegisterAPIServerUnreachable(t *testing.T) {
	cp := startControlPlane(t)
	apiserver := newFakeAPIServer(t)
	kc := apiserver.kubeconfig(t, userToken)
	apiserver.Close()
	useAdminKey(t, cp.admin)
	out, err := podid(t, "cluster", "register", "demo", "--kubeconfig", kc, "--server", cp.url)
	if exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "cannot reach the cluster's API server") || strings.Contains(err.Error(), "podid server at") {
		t.Errorf("exit %d, %v\n%s", exitCode(err), err, out)
	}
}
