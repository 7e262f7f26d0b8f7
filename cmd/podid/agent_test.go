package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/sts/ststest"
)

// stack is podid server and podid agent started through their real
// commands, with the STS test server behind them and a cluster whose
// tokens a test can mint.
type stack struct {
	serverURL  string
	agentURL   string // http://127.0.0.1:<port>
	probeURL   string
	metricsURL string
	// serverMetricsURL is podid server's /metrics.
	serverMetricsURL string
	sts              *ststest.Server
	issuer           *k8stest.Issuer
	admin            auth.Key
	stopServer       context.CancelFunc
}

const stackRole = "arn:aws:iam::111122223333:role/web"

// runCmd starts a podid command in the background; the returned channel
// yields its error when ctx ends.
func runCmd(t *testing.T, ctx context.Context, args ...string) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		cmd := NewRootCmd()
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		done <- cmd.ExecuteContext(ctx)
	}()
	return done
}

func startStack(t *testing.T, agentHost string, agentPort string) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{sts: ststest.New(t)}
	var err error
	if s.issuer, err = k8stest.NewIssuer("https://demo.podid.test", "RS256"); err != nil {
		t.Fatal(err)
	}
	admin, _ := auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	agentKey, _ := auth.GenerateKey("agent", auth.ScopeAgent, []string{"demo"})
	s.admin = admin
	keys, _ := json.Marshal(map[string]any{"keys": []auth.Key{admin, agentKey}})
	keysFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keysFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}

	// The server reads its STS credentials from the environment at start;
	// they are removed again before any pod-side SDK looks.
	stsCreds, _ := s.sts.Credentials().Retrieve(context.Background())
	t.Setenv("AWS_ACCESS_KEY_ID", stsCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", stsCreds.SecretAccessKey)
	isolateAWSEnv(t)
	serverAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	s.stopServer = cancel
	serverMetrics := freeAddr(t)
	s.serverMetricsURL = "http://" + serverMetrics + "/metrics"
	done := runCmd(t, ctx, "server", "--listen", serverAddr, "--data-dir", dir, "--keys-file", keysFile,
		"--sts-endpoint", s.sts.URL, "--account", "111122223333", "--log-level", "warn", "--metrics-listen", serverMetrics)
	t.Cleanup(func() { cancel(); <-done })
	s.serverURL = "http://" + serverAddr
	waitHealthy(t, s.serverURL, done)
	os.Unsetenv("AWS_ACCESS_KEY_ID")
	os.Unsetenv("AWS_SECRET_ACCESS_KEY")

	adminClient := &api.Client{Endpoint: s.serverURL, Credentials: credentials.NewStaticCredentialsProvider(admin.AccessKeyID, admin.SecretAccessKey, "")}
	if _, err := adminClient.RegisterCluster(ctx, api.Cluster{Name: "demo", Issuer: s.issuer.URL, Keys: api.KeySource{Kind: "jwks", JWKS: s.issuer.JWKS()}}); err != nil {
		t.Fatal(err)
	}
	eksClient := eks.New(eks.Options{BaseEndpoint: aws.String(s.serverURL), Region: "us-east-1", Credentials: adminClient.Credentials})
	if _, err := eksClient.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("demo"), Namespace: aws.String("shop"), ServiceAccount: aws.String("web"), RoleArn: aws.String(stackRole),
	}); err != nil {
		t.Fatal(err)
	}

	probe, metrics := freeAddr(t), freeAddr(t)
	_, probePort, _ := strings.Cut(probe, ":")
	_, metricsPort, _ := strings.Cut(metrics, ":")
	t.Setenv("PODID_AGENT_ACCESS_KEY_ID", agentKey.AccessKeyID)
	t.Setenv("PODID_AGENT_SECRET_ACCESS_KEY", agentKey.SecretAccessKey)
	actx, acancel := context.WithCancel(context.Background())
	adone := runCmd(t, actx, "agent", "--cluster-name", "demo", "--endpoint", s.serverURL, "--bind-hosts", agentHost, "--port", agentPort,
		"--allow-loopback", "--probe-host", "127.0.0.1", "--probe-port", probePort, "--metrics-port", metricsPort, "--node-name", "node-1", "--log-level", "warn")
	t.Cleanup(func() {
		acancel()
		if err := <-adone; err != nil {
			t.Errorf("podid agent stopped with %v, want a clean exit", err)
		}
	})
	s.agentURL = "http://" + hostForHeader(agentHost)
	if agentPort != "80" {
		s.agentURL += ":" + agentPort
	}
	s.probeURL, s.metricsURL = "http://"+probe, "http://"+metrics
	waitReady(t, s.probeURL+"/readyz", adone)
	return s
}

// isolateAWSEnv keeps the developer's AWS settings out of the SDKs under test.
func isolateAWSEnv(t *testing.T) {
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "us-east-1")
}

func waitReady(t *testing.T, url string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200", url)
}

func (s *stack) writeToken(t *testing.T, path, pod string) {
	t.Helper()
	tok, err := s.issuer.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: pod, UID: "uid-" + pod, NodeName: "node-1"}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Write and rename, as the kubelet's atomic writer does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) lastPodTag(t *testing.T) string {
	t.Helper()
	calls := s.sts.Calls()
	if len(calls) == 0 {
		t.Fatal("STS saw no call")
	}
	for _, tg := range calls[len(calls)-1].Tags {
		if tg.Key == "kubernetes-pod-name" {
			return tg.Value
		}
	}
	t.Fatal("no kubernetes-pod-name tag")
	return ""
}

// TestAgentWithGoSDK: an unmodified aws-sdk-go-v2 default config with the
// two environment variables gets credentials through agent → server → STS.
func TestAgentWithGoSDK(t *testing.T) {
	s := startStack(t, "127.0.0.1", strings.Split(freeAddr(t), ":")[1])
	tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	s.writeToken(t, tokenFile, "web-1")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.agentURL+"/v1/credentials")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
	ctx := context.Background()

	retrieve := func() aws.Credentials {
		t.Helper()
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			t.Fatalf("SDK credentials: %v", err)
		}
		return c
	}
	first := retrieve()
	if !strings.HasPrefix(first.AccessKeyID, "ASIA") || first.SecretAccessKey == "" || first.SessionToken == "" || first.AccountID != "111122223333" {
		t.Errorf("credentials %s account %q", first.AccessKeyID, first.AccountID)
	}
	if !first.CanExpire || first.Expires.Before(time.Now().Add(5*time.Hour)) {
		t.Errorf("expiry %v (can expire %v), want about 6h ahead", first.Expires, first.CanExpire)
	}
	if got := s.lastPodTag(t); got != "web-1" {
		t.Errorf("STS pod tag %q, want web-1", got)
	}
	calls := len(s.sts.Calls())

	// A second SDK in the same pod is served from the agent's cache.
	if again := retrieve(); again.AccessKeyID != first.AccessKeyID || len(s.sts.Calls()) != calls {
		t.Errorf("second fetch made an STS call or got other credentials")
	}

	// The kubelet rotates the token: the SDK re-reads the file and the
	// agent exchanges the new token.
	s.writeToken(t, tokenFile, "web-1b")
	rotated := retrieve()
	if rotated.AccessKeyID == first.AccessKeyID {
		t.Error("the rotated token got the old credentials")
	}
	if got := s.lastPodTag(t); got != "web-1b" {
		t.Errorf("STS pod tag after rotation %q, want web-1b", got)
	}

	resp, err := http.Get(s.serverMetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`podid_server_requests_total{code="200",error_type="",operation="AssumeRoleForPodIdentity"}`, "podid_server_ratelimit_key_rate 100", "podid_server_sts_calls_in_flight"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("server metrics lack %s", m)
		}
	}

	// podid server goes away: cached credentials are still served.
	s.stopServer()
	time.Sleep(100 * time.Millisecond)
	if during := retrieve(); during.AccessKeyID != rotated.AccessKeyID {
		t.Error("outage: cached credentials were not served")
	}

	resp, err = http.Get(s.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"podid_agent_requests_total", "podid_agent_cache_hits_total", "podid_agent_server_calls_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// TestAgentWithNPMSDK does the same with @aws-sdk/credential-providers.
func TestAgentWithNPMSDK(t *testing.T) {
	dir, _ := filepath.Abs("../../test/npm")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "@aws-sdk", "credential-providers"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the npm credential provider test cannot run in CI: %v (run `make npm-deps`)", err)
		}
		t.Skipf("node or test/npm/node_modules missing (%v): run `make npm-deps`", err)
	}
	s := startStack(t, "127.0.0.1", strings.Split(freeAddr(t), ":")[1])
	tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	s.writeToken(t, tokenFile, "js-1")

	cmd := exec.Command(node, "container-credentials.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"AWS_CONTAINER_CREDENTIALS_FULL_URI="+s.agentURL+"/v1/credentials",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="+tokenFile,
		"ROTATE_TOKEN_FILE=1",
	)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	type result struct {
		AccessKeyID     string `json:"accessKeyId"`
		HasSecret       bool   `json:"hasSecret"`
		HasSessionToken bool   `json:"hasSessionToken"`
		AccountID       string `json:"accountId"`
		Expiration      string `json:"expiration"`
	}
	next := func() result {
		t.Helper()
		if !lines.Scan() {
			_ = cmd.Wait()
			t.Fatalf("node printed no result: %s", stderr.String())
		}
		var r result
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", lines.Text(), err)
		}
		return r
	}
	first := next()
	if !strings.HasPrefix(first.AccessKeyID, "ASIA") || !first.HasSecret || !first.HasSessionToken || first.Expiration == "" {
		t.Errorf("first fetch %+v", first)
	}
	if got := s.lastPodTag(t); got != "js-1" {
		t.Errorf("STS pod tag %q", got)
	}
	s.writeToken(t, tokenFile, "js-2")
	_, _ = io.WriteString(stdin, "rotated\n")
	second := next()
	if second.AccessKeyID == first.AccessKeyID {
		t.Error("the rotated token got the old credentials")
	}
	if got := s.lastPodTag(t); got != "js-2" {
		t.Errorf("STS pod tag after rotation %q", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v: %s", err, stderr.String())
	}
}
