package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/podid/podid/internal/auth"
)

// TestNPMClientEKS runs test/npm/eks-crud.mjs: the same association CRUD
// through the real @aws-sdk/client-eks for JavaScript.
func TestNPMClientEKS(t *testing.T) {
	dir, err := filepath.Abs("../../test/npm")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "@aws-sdk", "client-eks"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the npm client test cannot run in CI: %v (run `make npm-deps`)", err)
		}
		t.Skipf("node or test/npm/node_modules missing (%v): run `make npm-deps` to include the @aws-sdk/client-eks test", err)
	}
	e := newEnv(t)
	e.registerFixtureClusters(t)
	k := e.keys[auth.ScopeAdmin]
	cmd := exec.Command(node, "eks-crud.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"PODID_ENDPOINT="+e.url,
		"PODID_CLUSTER=cluster-a",
		"AWS_ACCESS_KEY_ID="+k.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+k.SecretAccessKey,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_REGION=us-east-1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("eks-crud.mjs failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
