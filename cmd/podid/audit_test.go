package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/internal/k8s/k8stest"
)

// fillLedger makes two issuances and two denials in cluster demo.
func fillLedger(t *testing.T, s *cliStack) {
	t.Helper()
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
		ServiceAccount: aws.String("web"), RoleArn: aws.String("arn:aws:iam::111122223333:role/web")})
	for _, want := range []struct{ ns, sa, pod, errType string }{
		{"shop", "web", "web-1", ""},
		{"shop", "ghost", "ghost-1", "ResourceNotFoundException"},
		{"shop", "web", "web-2", ""},
	} {
		if got := s.assume(t, "demo", s.token(t, want.ns, want.sa, want.pod), ""); got != want.errType {
			t.Fatalf("%s: got %q, want %q", want.pod, got, want.errType)
		}
	}
	forged, err := k8stest.NewIssuer(s.issuer.URL, "RS256")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := forged.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-9", NodeName: "node-1"}, time.Now(), time.Hour)
	if got := s.assume(t, "demo", tok, ""); got != "InvalidTokenException" {
		t.Fatalf("forged token: %q", got)
	}
}

func TestAuditCommand(t *testing.T) {
	s := startCLIStack(t, "demo", "other")
	fillLedger(t, s)
	ro := &s.readOnly
	s.mustRun(t, 0, ro, "audit")
	s.mustRun(t, 0, ro, "audit", "--cluster", "demo", "-o", "json", "--limit", "2")
	s.mustRun(t, 0, ro, "audit", "--outcome", "denied")
	s.mustRun(t, 0, ro, "audit", "--namespace", "shop", "--service-account", "web", "--limit", "1")
	s.mustRun(t, 0, ro, "audit", "--outcome", "issued", "-o", "yaml")
	s.mustRun(t, 0, ro, "audit", "--cluster", "other")
	s.mustRun(t, 0, ro, "audit", "--cluster", "nope")
	s.golden(t, "audit")
}

// syncBuffer is written by the following command and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls until cond holds; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestAuditFollow(t *testing.T) {
	s := startCLIStack(t, "demo")
	fillLedger(t, s)
	setKey(t, &s.readOnly)
	for _, output := range []string{"table", "json"} {
		t.Run(output, func(t *testing.T) {
			s.assume(t, "demo", s.token(t, "shop", "web", output+"-1"), "")
			s.assume(t, "demo", s.token(t, "shop", "ghost", output+"-2"), "")
			var out syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			cmd := NewRootCmd()
			cmd.SetArgs([]string{"audit", "--cluster", "demo", "--follow", "--limit", "2", "--interval", "10ms", "-o", output})
			cmd.SetOut(&out)
			done := make(chan error, 1)
			go func() { done <- cmd.ExecuteContext(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("follow ended with %v, want nil on interrupt", err)
				}
			}()
			// The newest two, oldest first.
			// The newest two, oldest first, then new ones as they come.
			waitFor(t, "the first events", func() bool { return strings.Contains(out.String(), output+"-2") })
			if first := out.String(); !inOrder(first, output+"-1", output+"-2") || strings.Contains(first, "InvalidTokenException") {
				t.Fatalf("first events are not the newest two oldest first:\n%s", first)
			}
			s.assume(t, "demo", s.token(t, "shop", "web", output+"-3"), "")
			s.assume(t, "demo", s.token(t, "shop", "ghost", output+"-4"), "")
			waitFor(t, "the new events", func() bool { return strings.Contains(out.String(), output+"-4") })
			all := out.String()
			if !inOrder(all, output+"-1", output+"-2", output+"-3", output+"-4") {
				t.Errorf("events not oldest first:\n%s", all)
			}
			lines := strings.Split(strings.TrimSpace(all), "\n")
			switch output {
			case "table":
				if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
					t.Errorf("want a header and 4 rows:\n%s", all)
				}
			case "json":
				if len(lines) != 4 || !strings.HasPrefix(lines[0], `{"id":`) {
					t.Errorf("want 4 JSON lines:\n%s", all)
				}
			}
		})
	}
}

// inOrder reports whether each of subs is in s, in that order.
func inOrder(s string, subs ...string) bool {
	at := 0
	for _, sub := range subs {
		i := strings.Index(s[at:], sub)
		if i < 0 {
			return false
		}
		at += i + len(sub)
	}
	return true
}
