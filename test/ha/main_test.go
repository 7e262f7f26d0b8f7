// Package ha_test holds the durability and failover tests of podid's highly
// available setup: the real podid binary, built once in TestMain, run as
// child processes so that a kill -9 is a real one.
//
// Everything listens on 127.0.0.1 and stops by itself; the children die
// with the test process (Linux: parent-death signal). The PostgreSQL tests
// need PODID_TEST_POSTGRES (see scripts/postgres-test.sh): without it they
// skip, or fail when CI is set.
package ha_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
)

// podidBin is the podid binary TestMain builds.
var podidBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "podid-ha-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	podidBin = filepath.Join(dir, "podid")
	// go test puts its own GOROOT/bin first on PATH, so "go" is the
	// toolchain running this test.
	build := exec.Command("go", "build", "-o", podidBin, "github.com/podid/podid/cmd/podid")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building podid:", err)
		return 1
	}
	return m.Run()
}

// child is a podid process.
type child struct {
	name   string
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan struct{}
	err    error
}

// logBuffer keeps a child's stderr to show when a test fails, capped so a
// chatty child cannot exhaust memory.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const maxLog = 64 << 10

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < maxLog {
		b.buf.Write(p[:min(len(p), maxLog-b.buf.Len())])
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs podid with args and env; the process is stopped when the test
// ends, and its stderr logged if the test failed.
func start(t *testing.T, name string, env []string, args ...string) *child {
	t.Helper()
	c := &child{name: name, cmd: exec.Command(podidBin, args...), logs: &logBuffer{}, exited: make(chan struct{})}
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	c.cmd.SysProcAttr = dieWithParent()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, c.logs)
		}
	})
	return c
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (c *child) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s: %v", c.name, err)
	}
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not die from SIGKILL", c.name)
	}
}

// stop ends the process gracefully, or by force after a while.
func (c *child) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// waitOK polls url until it answers 200; it fails the test if the child
// exits first or a minute passes.
func waitOK(t *testing.T, url string, c *child) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			t.Fatalf("%s exited: %v\n%s", c.name, c.err, c.logs)
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
	t.Fatalf("%s: %s never answered 200", c.name, url)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	return port
}

// baseEnv is this process's environment without AWS or podid settings, so
// that neither the developer's nor another test's leak into a child.
func baseEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "PODID_") {
			continue
		}
		env = append(env, kv)
	}
	none := filepath.Join(t.TempDir(), "none")
	return append(env, "AWS_CONFIG_FILE="+none, "AWS_SHARED_CREDENTIALS_FILE="+none, "AWS_EC2_METADATA_DISABLED=true", "AWS_REGION=us-east-1")
}

// keys are the access keys of a test: an admin and an agent key for cluster.
type keys struct {
	file  string
	admin auth.Key
	agent auth.Key
}

func writeKeys(t *testing.T, cluster string) keys {
	t.Helper()
	admin, err := auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := auth.GenerateKey("agent", auth.ScopeAgent, []string{cluster})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(map[string]any{"keys": []auth.Key{admin, agent}})
	if err != nil {
		t.Fatal(err)
	}
	k := keys{file: filepath.Join(t.TempDir(), "keys.json"), admin: admin, agent: agent}
	if err := os.WriteFile(k.file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k keys) adminCreds() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(k.admin.AccessKeyID, k.admin.SecretAccessKey, "")
}

// server is a running podid server.
type server struct {
	*child
	url string
}

// startServer runs podid server on store with the keys file, plus extra
// flags, and waits until it is healthy; env may carry the STS credentials.
func startServer(t *testing.T, name, store string, k keys, env []string, extra ...string) *server {
	t.Helper()
	s := launchServer(t, name, store, k, env, extra...)
	s.waitHealthy(t)
	return s
}

// launchServer is startServer without the wait, to start replicas at once.
func launchServer(t *testing.T, name, store string, k keys, env []string, extra ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"server", "--listen", addr, "--data-dir", t.TempDir(), "--store", store, "--keys-file", k.file,
		"--account", "111122223333", "--log-level", "warn"}, extra...)
	return &server{child: start(t, name, env, args...), url: "http://" + addr}
}

func (s *server) waitHealthy(t *testing.T) {
	t.Helper()
	waitOK(t, s.url+"/healthz", s.child)
}

// eksClient is the real AWS SDK EKS client on a podid server. It makes one
// attempt per call: the tests must know which calls the server answered.
func eksClient(url string, creds aws.CredentialsProvider) *eks.Client {
	return eks.New(eks.Options{
		BaseEndpoint: aws.String(url),
		Region:       "us-east-1",
		Credentials:  creds,
		Retryer:      aws.NopRetryer{},
		HTTPClient:   &http.Client{Timeout: time.Minute},
	})
}

func registerCluster(t *testing.T, ctx context.Context, url string, k keys, c api.Cluster) {
	t.Helper()
	admin := &api.Client{Endpoint: url, Credentials: k.adminCreds()}
	if _, err := admin.RegisterCluster(ctx, c); err != nil {
		t.Fatalf("registering cluster %s: %v", c.Name, err)
	}
}
