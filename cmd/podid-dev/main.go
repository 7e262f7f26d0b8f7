// Command podid-dev helps try podid on a laptop without AWS or Kubernetes:
// it runs a fake AWS STS and mints service-account tokens shaped exactly
// like the projected tokens kube-apiserver gives pods.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "podid-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return NewRootCmd().ExecuteContext(ctx)
}
