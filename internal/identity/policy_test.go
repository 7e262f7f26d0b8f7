package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyRules(t *testing.T) {
	p := &Policy{Rules: []PolicyRule{
		{Name: "payments-prod", Clusters: []string{"prod-*"}, Namespaces: []string{"payments"}, RoleARNs: []string{"arn:aws:iam::111122223333:role/payments-*"}},
		{Name: "team-paths", Namespaces: []string{"team-*"}, RoleARNs: []string{"arn:aws:iam::111122223333:role/teams/*"}},
		{Name: "sandbox", Clusters: []string{"dev"}, RoleARNs: []string{"arn:aws:iam::*:role/*"}},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cluster, ns, role, target string
		want                            string // "" allowed, else a substring of the error
	}{
		{"allowed by a rule", "prod-eu", "payments", "arn:aws:iam::111122223333:role/payments-api", "", ""},
		{"role outside the rule", "prod-eu", "payments", "arn:aws:iam::111122223333:role/admin", "", "payments-prod"},
		{"target role outside the rule", "prod-eu", "payments", "arn:aws:iam::111122223333:role/payments-api", "arn:aws:iam::999999999999:role/x", "targetRoleArn"},
		{"namespace no rule covers", "prod-eu", "shop", "arn:aws:iam::111122223333:role/payments-api", "", "no policy rule covers namespace shop"},
		{"cluster glob does not match", "staging", "payments", "arn:aws:iam::111122223333:role/payments-api", "", "no policy rule covers"},
		{"path glob", "any", "team-a", "arn:aws:iam::111122223333:role/teams/a", "", ""},
		{"star does not cross a path", "any", "team-a", "arn:aws:iam::111122223333:role/teams/a/b", "", "team-paths"},
		{"sandbox allows any role", "dev", "whatever", "arn:aws:iam::444455556666:role/x", "arn:aws:iam::444455556666:role/y", ""},
	} {
		err := p.Check(tc.cluster, tc.ns, tc.role, tc.target)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		case err != nil && CodeOf(err) != CodeInvalidParameter:
			t.Errorf("%s: code %v", tc.name, CodeOf(err))
		}
	}
	var none *Policy
	if err := none.Check("c", "n", "arn:aws:iam::111122223333:role/x", ""); err != nil {
		t.Errorf("no policy refused: %v", err)
	}
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		f := filepath.Join(dir, "policy.json")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p, err := LoadPolicy(write(`{"rules":[{"name":"a","clusters":["prod"],"roleArns":["arn:aws:iam::*:role/a-*"]}]}`))
	if err != nil || len(p.Rules) != 1 {
		t.Fatalf("LoadPolicy = %+v, %v", p, err)
	}
	for body, want := range map[string]string{
		`{"rules":[{"name":"a","roleArn":["x"]}]}`:                                "unknown field",
		`{"rules":[{"roleArns":["x"]}]}`:                                          "no name",
		`{"rules":[{"name":"a"}]}`:                                                "allows no role",
		`{"rules":[{"name":"a","roleArns":["[x"]}]}`:                              "bad glob",
		`{"rules":[{"name":"a","roleArns":["x"]},{"name":"a","roleArns":["y"]}]}`: "twice",
		`not json`: "invalid character",
	} {
		if _, err := LoadPolicy(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", body, err, want)
		}
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}
