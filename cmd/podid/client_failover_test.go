package main

import (
	"strings"
	"testing"
)

// TestClientFailsOverBetweenReplicas: with several --server URLs the
// command uses the first that answers, skipping a replica that is down.
func TestClientFailsOverBetweenReplicas(t *testing.T) {
	s := startCLIStack(t, "prod")
	down := "http://" + freeAddr(t) // nothing listens there
	r := s.run(t, &s.admin, "cluster", "list", "--server", down+","+s.url)
	if r.code != 0 || !strings.Contains(r.out, "prod") {
		t.Fatalf("failover list: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r = s.run(t, &s.admin, "association", "list", "--cluster", "prod", "--server", down+", "+s.url)
	if r.code != 0 {
		t.Fatalf("failover association list: exit %d\n%s%s", r.code, r.out, r.err)
	}
	// All down: the error names the first replica and exits 5.
	r = s.run(t, &s.admin, "cluster", "list", "--server", down+","+down+"/")
	if r.code != exitUnavailable || !strings.Contains(r.err, strings.TrimPrefix(down, "http://")) {
		t.Fatalf("all replicas down: exit %d\n%s", r.code, r.err)
	}
	if r := s.run(t, &s.admin, "cluster", "list", "--server", s.url+",ftp://x"); r.code != exitUsage {
		t.Fatalf("a bad URL in the list: exit %d", r.code)
	}
}
