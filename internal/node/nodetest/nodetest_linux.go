//go:build linux

// Package nodetest runs a test in a fresh network namespace, so tests can
// create links and bind link-local addresses without touching the host.
package nodetest

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/vishvananda/netlink"
)

// childEnv marks a re-executed test binary and names the test it runs.
const childEnv = "PODID_NETNS_TEST_CHILD"

// Isolated re-executes the calling top-level test in a fresh network
// namespace (via unshare -n), optionally as nobody (via setpriv), so tests
// can create links and hit permission errors without touching the host.
// It returns true in the child, where the test body must run, and false in
// the parent after relaying the child's result. Without root it skips,
// because creating a namespace needs it; as root (as in CI) it never skips.
func Isolated(t *testing.T, asNobody bool) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (unshare -n); CI runs this as root")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n"}
	if asNobody {
		exe = copyForNobody(t, exe)
		args = append(args, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
	}
	args = append(args, exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	if os.Getenv("GORACE") == "" {
		// The race runtime otherwise sleeps a second at exit.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	t.Logf("isolated child (nobody=%v) output:\n%s", asNobody, out)
	if err != nil {
		t.Fatalf("isolated child failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		if bytes.Contains(out, []byte("--- SKIP: "+t.Name())) {
			t.Skip("skipped in the isolated child; see log")
		}
		t.Fatal("isolated child did not run the test; see log")
	}
	return false
}

// copyForNobody copies the test binary to a world-readable directory:
// go test builds it under a 0700 directory that nobody cannot enter.
func copyForNobody(t *testing.T, exe string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "podid-netns-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, filepath.Base(exe))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// LoopbackUp brings up loopback, which a fresh namespace leaves down and without
// which the kernel cannot deliver traffic to any local address.
func LoopbackUp(t *testing.T) {
	t.Helper()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
}
