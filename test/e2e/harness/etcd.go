//go:build linux

package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Etcd is an etcd member on loopback with a throwaway data directory.
// Several API servers can share it under different --etcd-prefix values.
type Etcd struct {
	// URL is the client URL, http://127.0.0.1:<port>.
	URL     string
	Process *Process
}

// StartEtcd starts etcd and waits until it reports healthy; tb.Cleanup
// stops it and removes its data.
func StartEtcd(ctx context.Context, tb TB) (*Etcd, error) {
	bin, err := EtcdBinary(tb)
	if err != nil {
		return nil, err
	}
	dir, err := TempDir(tb, "podid-e2e-etcd-*")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		e, err := startEtcd(ctx, tb, bin, dir, attempt)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if e == nil || !addressInUse(e.Process) {
			break
		}
	}
	return nil, lastErr
}

func startEtcd(ctx context.Context, tb TB, bin, dir string, attempt int) (*Etcd, error) {
	client, peer := freePort(), freePort()
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	data := filepath.Join(dir, fmt.Sprintf("data-%d", attempt))
	p, err := StartProcess(tb, "etcd", filepath.Join(dir, "etcd.log"), os.Environ(), bin,
		"--name=e2e",
		"--data-dir="+data,
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		"--logger=zap",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	e := &Etcd{URL: clientURL, Process: p}
	hc := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(p, time.Minute, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h struct{ Health string }
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return err
		}
		if h.Health != "true" {
			return fmt.Errorf("health %q", h.Health)
		}
		return nil
	})
	if err != nil {
		p.Stop()
		return e, err
	}
	return e, nil
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before it is used; starters retry when that happens.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreePort is freePort for tests that start their own servers.
func FreePort() int { return freePort() }
