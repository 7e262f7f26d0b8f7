package identity

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
)

// PolicyRule allows binding roles matching RoleARNs in the clusters and
// namespaces it names. Every list holds globs (path.Match syntax: *, ?, [..]);
// an empty list matches everything.
type PolicyRule struct {
	Name       string   `json:"name"`
	Clusters   []string `json:"clusters,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	RoleARNs   []string `json:"roleArns"`
}

// Policy is the set of rules an association's roles must satisfy. With no
// rules every role is allowed; with rules, each role an association binds
// (roleArn and targetRoleArn) must be allowed by at least one rule that
// covers its cluster and namespace.
type Policy struct {
	Rules []PolicyRule `json:"rules"`
}

// LoadPolicy reads a JSON policy file: {"rules": [{"name", "clusters",
// "namespaces", "roleArns"}]}. Unknown fields and bad globs are errors.
func LoadPolicy(file string) (*Policy, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy file %s: %w", file, err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("policy file %s: %w", file, err)
	}
	return &p, nil
}

// Validate checks names and globs.
func (p *Policy) Validate() error {
	seen := map[string]bool{}
	for i, r := range p.Rules {
		switch {
		case r.Name == "":
			return fmt.Errorf("rule %d has no name", i)
		case seen[r.Name]:
			return fmt.Errorf("rule %q is defined twice", r.Name)
		case len(r.RoleARNs) == 0:
			return fmt.Errorf("rule %q allows no role: give roleArns (globs)", r.Name)
		}
		seen[r.Name] = true
		for _, list := range [][]string{r.Clusters, r.Namespaces, r.RoleARNs} {
			for _, g := range list {
				if _, err := path.Match(g, ""); err != nil {
					return fmt.Errorf("rule %q: bad glob %q: %w", r.Name, g, err)
				}
			}
		}
	}
	return nil
}

func matchAny(globs []string, s string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		// ARNs contain '/', which path.Match's * does not cross; rules about
		// roles under a path are written with the path, e.g. role/team/*.
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// Check returns an InvalidParameter error naming the rules that cover the
// cluster and namespace when roleArn or targetRoleArn (if set) is allowed
// by none of them.
func (p *Policy) Check(cluster, namespace, roleARN, targetRoleARN string) error {
	if p == nil || len(p.Rules) == 0 {
		return nil
	}
	var covering []string
	for _, r := range p.Rules {
		if matchAny(r.Clusters, cluster) && matchAny(r.Namespaces, namespace) {
			covering = append(covering, r.Name)
		}
	}
	for _, fr := range [][2]string{{"roleArn", roleARN}, {"targetRoleArn", targetRoleARN}} {
		field, role := fr[0], fr[1]
		if role == "" {
			continue
		}
		allowed := false
		for _, r := range p.Rules {
			if matchAny(r.Clusters, cluster) && matchAny(r.Namespaces, namespace) && matchAny(r.RoleARNs, role) {
				allowed = true
				break
			}
		}
		if allowed {
			continue
		}
		if len(covering) == 0 {
			return Errorf(CodeInvalidParameter, "%s %s is not allowed: no policy rule covers namespace %s of cluster %s", field, role, namespace, cluster)
		}
		return Errorf(CodeInvalidParameter, "%s %s is not allowed in namespace %s of cluster %s by policy rule(s) %s", field, role, namespace, cluster, strings.Join(covering, ", "))
	}
	return nil
}
