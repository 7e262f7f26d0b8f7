//go:build linux

package harness

import (
	"context"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// TestStartEtcdAndCleanup starts etcd under a Stack and checks that Close
// kills its whole process group and removes its data directory.
func TestStartEtcdAndCleanup(t *testing.T) {
	var stack Stack
	t.Cleanup(stack.Close)
	e, err := StartEtcd(t.Context(), &stack)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pid := e.Process.cmd.Process.Pid
	stack.Close()
	select {
	case <-e.Process.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("etcd still running after cleanup")
	}
	if err := syscall.Kill(-pid, 0); err == nil {
		t.Errorf("process group %d still has members after cleanup", pid)
	}
	if _, err := os.Stat(e.Process.LogPath); !os.IsNotExist(err) {
		t.Errorf("etcd's directory was not removed: stat %s: %v", e.Process.LogPath, err)
	}
}

// TestServerAndAgent starts podid server and agent from a fresh build and
// checks the agent answers a request without a token with 400, which takes
// the whole agent up and listening on loopback.
func TestServerAndAgent(t *testing.T) {
	ctx := context.Background()
	bin, err := PodidBinary(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(RemovePodidBuild)
	srv, err := StartServer(ctx, t, ServerOptions{
		Podid: bin, STSEndpoint: "http://127.0.0.1:1", Region: "us-east-1", Account: "123456789012",
		STSCredentials: aws.Credentials{AccessKeyID: "AKIAEXAMPLEEXAMPLE01", SecretAccessKey: "not-used-by-this-test-0123456789"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().ListClusters(ctx); err != nil {
		t.Fatalf("admin key: %v", err)
	}
	agent, err := StartAgent(ctx, t, bin, srv, "some-cluster")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(agent.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("agent without token: HTTP %d, want 400", resp.StatusCode)
	}
}
