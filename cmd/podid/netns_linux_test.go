//go:build linux

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/podid/podid/internal/node/nodetest"
)

// TestAgentOnLinkLocalAddress runs in a fresh network namespace: `podid
// agent initialize` creates the link, the agent binds the real
// 169.254.170.23:80 and [fd00:ec2::23]:80, and the unmodified Go SDK
// reaches it at the URLs EKS injects into pods.
func TestAgentOnLinkLocalAddress(t *testing.T) {
	if !nodetest.Isolated(t, false) {
		return
	}
	nodetest.LoopbackUp(t)
	init := NewRootCmd()
	var out bytes.Buffer
	init.SetOut(&out)
	init.SetArgs([]string{"agent", "initialize"})
	if err := init.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("agent initialize: %v", err)
	}
	if !strings.Contains(out.String(), "169.254.170.23") {
		t.Errorf("initialize said %q", out.String())
	}
	// Idempotent: a second run (the init container restarting) is fine.
	again := NewRootCmd()
	again.SetOut(&out)
	again.SetArgs([]string{"agent", "initialize"})
	if err := again.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("second initialize: %v", err)
	}

	s := startStack(t, "169.254.170.23,fd00:ec2::23", "80")
	tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	s.writeToken(t, tokenFile, "web-netns")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
	for _, uri := range []string{"http://169.254.170.23/v1/credentials", "http://[fd00:ec2::23]/v1/credentials"} {
		t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
		cfg, err := config.LoadDefaultConfig(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, err := cfg.Credentials.Retrieve(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		if !strings.HasPrefix(c.AccessKeyID, "ASIA") {
			t.Errorf("%s: access key %q", uri, c.AccessKeyID)
		}
	}
	if got := s.lastPodTag(t); got != "web-netns" {
		t.Errorf("STS pod tag %q", got)
	}
}
