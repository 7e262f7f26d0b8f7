//go:build linux

package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KubeVersion is the Kubernetes release the suite runs. It must match the
// k8s.io/kubernetes version in ../tools/go.mod.
const KubeVersion = "v1.37.2"

// Environment variables that point the harness at binaries built or
// installed elsewhere.
const (
	EnvKubeAPIServer = "PODID_E2E_KUBE_APISERVER"
	EnvEtcd          = "PODID_E2E_ETCD"
)

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot is the podid repository root: the nearest directory above the
// working directory whose go.mod declares module github.com/podid/podid.
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			raw, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.HasPrefix(raw, []byte("module github.com/podid/podid\n")) {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("podid repository root not found above the working directory")
				return
			}
			dir = parent
		}
	})
	return rootDir, rootErr
}

// goTool is the go command that runs the tests, so builds use the same
// toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// EtcdBinary returns the path of an etcd binary: $PODID_E2E_ETCD, etcd on PATH,
// or Debian's etcd-server package, installed with apt-get when running as
// root. Otherwise the error says how to get one.
func EtcdBinary(tb TB) (string, error) {
	if p := os.Getenv(EnvEtcd); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("etcd not found on PATH and not running as root to install it: run `sudo apt-get install etcd-server` or set %s to an etcd 3.4+ binary", EnvEtcd)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("etcd not found on PATH and no apt-get to install it: install etcd 3.4+ or set %s", EnvEtcd)
	}
	tb.Logf("installing etcd-server with apt-get")
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "etcd-server")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get install etcd-server: %w\n%s", err, out)
		}
		return nil
	}
	if err := install(); err != nil {
		// A fresh machine may have no package lists yet.
		if out, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("%v; apt-get update: %v\n%s", err, uerr, out)
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	return exec.LookPath("etcd")
}

// CacheDir is where built binaries are kept between runs:
// $XDG_CACHE_HOME/podid-e2e, or ~/.cache/podid-e2e.
func CacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "podid-e2e"), nil
}

// KubeAPIServerBinary returns the path of a kube-apiserver KubeVersion binary:
// $PODID_E2E_KUBE_APISERVER, the cached build, or a fresh build from the
// tools module (about 10 minutes on two cores), which is then cached. A
// file lock keeps concurrent test processes from building it twice.
func KubeAPIServerBinary(tb TB) (string, error) {
	if p := os.Getenv(EnvKubeAPIServer); p != "" {
		return p, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "kube-apiserver-"+KubeVersion)
	if isExecutable(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(cache, ".build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if isExecutable(bin) { // built by another process while we waited
		return bin, nil
	}
	if err := BuildKubeAPIServer(tb, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// BuildKubeAPIServer builds kube-apiserver KubeVersion from the tools
// module into out. The version is stamped the way Kubernetes' own build
// does: without it the server reports v0.0.0-master and kubectl refuses to
// parse it.
func BuildKubeAPIServer(tb TB, out string) error {
	tools, err := repoFile("test", "e2e", "tools")
	if err != nil {
		return err
	}
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	const pkg = "k8s.io/component-base/version"
	ldflags := fmt.Sprintf("-s -w -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean",
		pkg, KubeVersion, pkg, major, pkg, minor, pkg)
	tmp := out + ".tmp"
	tb.Logf("building kube-apiserver %s from %s (about 10 minutes on 2 cores the first time; cached as %s)", KubeVersion, tools, out)
	start := time.Now()
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "k8s.io/kubernetes/cmd/kube-apiserver")
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("building kube-apiserver: %w\n%s", err, output)
	}
	tb.Logf("built kube-apiserver %s in %s", KubeVersion, time.Since(start).Round(time.Second))
	return os.Rename(tmp, out)
}

var podidBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// PodidBinary builds the podid command from the repository, once per test
// process, the way a user would: go build ./cmd/podid in the main module.
func PodidBinary(tb TB) (string, error) {
	podidBuild.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			podidBuild.err = err
			return
		}
		dir, err := os.MkdirTemp("", "podid-e2e-bin-*")
		if err != nil {
			podidBuild.err = err
			return
		}
		podidBuild.dir = dir
		bin := filepath.Join(dir, "podid")
		cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/podid")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			podidBuild.err = fmt.Errorf("go build ./cmd/podid: %w\n%s", err, out)
			return
		}
		podidBuild.bin = bin
	})
	return podidBuild.bin, podidBuild.err
}

// RemovePodidBuild deletes the binary PodidBinary built; call it from TestMain
// after the tests.
func RemovePodidBuild() {
	if podidBuild.dir != "" {
		os.RemoveAll(podidBuild.dir)
	}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lockFile takes an exclusive flock on path, waiting as long as needed.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
