//go:build linux

// Command prepare gets the end-to-end suite's dependencies ready before the
// tests run: etcd (installed with apt-get when missing, as root) and the
// kube-apiserver binary (built and cached on first use). The tests would do
// the same on their own, but inside `go test` the build's progress stays
// hidden for ten minutes; run from make e2e, it shows and is timed.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/podid/podid/test/e2e/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e prepare:", err)
		os.Exit(1)
	}
}

func run() error {
	var stack harness.Stack
	defer stack.Close()
	start := time.Now()
	etcd, err := harness.EtcdBinary(&stack)
	if err != nil {
		return err
	}
	fmt.Printf("e2e: etcd %s (%s)\n", etcd, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	apiserver, err := harness.KubeAPIServerBinary(&stack)
	if err != nil {
		return err
	}
	fmt.Printf("e2e: kube-apiserver %s %s (%s)\n", harness.KubeVersion, apiserver, time.Since(start).Round(time.Millisecond))
	return nil
}
