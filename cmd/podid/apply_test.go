package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/google/go-cmp/cmp"
)

const applyV1 = `apiVersion: podid.io/v1
kind: AssociationSet
metadata:
  name: shop
spec:
  associations:
  - cluster: demo
    namespace: shop
    serviceAccount: web
    roleArn: arn:aws:iam::111122223333:role/web
    tags: {team: payments}
  - cluster: demo
    namespace: shop
    serviceAccount: api
    roleArn: arn:aws:iam::111122223333:role/api
    targetRoleArn: arn:aws:iam::444455556666:role/api
  - cluster: other
    namespace: batch
    serviceAccount: report
    roleArn: arn:aws:iam::111122223333:role/report
    disableSessionTags: true
    policy: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'
  # Equal to one made by hand: left alone, never pruned.
  - cluster: demo
    namespace: shop
    serviceAccount: manual
    roleArn: arn:aws:iam::111122223333:role/manual
`

// applyV2 changes web's role and tags, drops api, reformats report's
// policy, adds worker, and collides with two associations it does not own.
const applyV2 = `apiVersion: podid.io/v1
kind: AssociationSet
metadata:
  name: shop
spec:
  associations:
  - cluster: demo
    namespace: shop
    serviceAccount: web
    roleArn: arn:aws:iam::111122223333:role/web-v2
    tags: {team: checkout}
  - cluster: other
    namespace: batch
    serviceAccount: report
    roleArn: arn:aws:iam::111122223333:role/report
    disableSessionTags: true
    policy: |
      {"Version": "2012-10-17",
       "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
  - cluster: demo
    namespace: shop
    serviceAccount: worker
    roleArn: arn:aws:iam::111122223333:role/worker
  - cluster: demo
    namespace: shop
    serviceAccount: legacy
    roleArn: arn:aws:iam::111122223333:role/legacy-new
  - cluster: demo
    namespace: shop
    serviceAccount: foreign
    roleArn: arn:aws:iam::111122223333:role/foreign-new
`

// applyV3 is v2 without the conflicts and without manual.
const applyV3 = `apiVersion: podid.io/v1
kind: AssociationSet
metadata: {name: shop}
spec:
  associations:
  - {cluster: demo, namespace: shop, serviceAccount: web, roleArn: "arn:aws:iam::111122223333:role/web-v2", tags: {team: checkout}}
  - {cluster: demo, namespace: shop, serviceAccount: worker, roleArn: "arn:aws:iam::111122223333:role/worker"}
`

const applyInvalid = `apiVersion: podid.io/v2
kind: AssociationSet
metadata:
  name: Shop Set
  labels: {a: b}
spec:
  associations:
  - cluster: demo
    namespace: shop
    serviceAccount: web
    roleARN: arn:aws:iam::111122223333:role/web
  - cluster: demo
    namespace: Shop
    serviceAccount: web
    roleArn: not-an-arn
    policy: '{}'
    tags: {podid.io/owner: me, cost: 12}
  - cluster: demo
    namespace: shop
    serviceAccount: web
    roleArn: arn:aws:iam::111122223333:role/web
    disableSessionTags: "yes"
  - just a string
`

// state lists the associations of the clusters as "cluster/ns/sa role owner".
func (s *cliStack) state(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, cl := range []string{"demo", "other"} {
		sums, err := s.eks(t).ListPodIdentityAssociations(t.Context(), &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String(cl)})
		if err != nil {
			t.Fatal(err)
		}
		for _, sum := range sums.Associations {
			d, err := s.eks(t).DescribePodIdentityAssociation(t.Context(), &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String(cl), AssociationId: sum.AssociationId})
			if err != nil {
				t.Fatal(err)
			}
			a := d.Association
			out = append(out, cl+"/"+aws.ToString(a.Namespace)+"/"+aws.ToString(a.ServiceAccount)+" "+
				strings.TrimPrefix(aws.ToString(a.RoleArn), "arn:aws:iam::111122223333:role/")+" owner="+a.Tags[ownerTag])
		}
	}
	slices.Sort(out)
	return out
}

func (s *cliStack) wantState(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	if diff := cmp.Diff(want, s.state(t)); diff != "" {
		t.Errorf("associations (-want +got):\n%s", diff)
	}
}

func TestApply(t *testing.T) {
	s := startCLIStack(t, "demo", "other")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1, v2, v3, invalid := write("v1.yaml", applyV1), write("v2.yaml", applyV2), write("v3.yaml", applyV3), write("invalid.yaml", applyInvalid)
	unknownCluster := write("unknown.yaml", strings.ReplaceAll(applyV3, "cluster: demo", "cluster: elsewhere"))
	admin, ro := &s.admin, &s.readOnly
	mk := func(sa, role string, tags map[string]string) {
		s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
			ServiceAccount: aws.String(sa), RoleArn: aws.String("arn:aws:iam::111122223333:role/" + role), Tags: tags})
	}
	mk("manual", "manual", nil)
	mk("legacy", "legacy-old", nil)
	mk("foreign", "foreign", map[string]string{ownerTag: "other-set"})
	before := []string{"demo/shop/foreign foreign owner=other-set", "demo/shop/legacy legacy-old owner=", "demo/shop/manual manual owner="}

	// Dry run, even with a read-only key: the plan, no change.
	s.mustRun(t, 0, ro, "apply", "-f", v1, "--dry-run")
	s.wantState(t, before...)
	// Create.
	s.mustRun(t, 0, admin, "apply", "-f", v1)
	s.wantState(t, append(before, "demo/shop/api api owner=shop", "demo/shop/web web owner=shop", "other/batch/report report owner=shop")...)
	// A rerun changes nothing.
	s.mustRun(t, 0, admin, "apply", "-f", v1, "--prune")

	// Change, prune, conflicts: the plan as JSON, then for real.
	s.mustRun(t, 4, ro, "apply", "-f", v2, "--prune", "--dry-run", "-o", "json")
	s.mustRun(t, 4, admin, "apply", "-f", v2, "--prune")
	after := []string{"demo/shop/foreign foreign owner=other-set", "demo/shop/legacy legacy-old owner=", "demo/shop/manual manual owner=",
		"demo/shop/web web-v2 owner=shop", "demo/shop/worker worker owner=shop", "other/batch/report report owner=shop"}
	s.wantState(t, after...)
	// Prune across clusters; what the set does not own stays.
	s.mustRun(t, 0, admin, "apply", "-f", v3, "--prune")
	s.wantState(t, "demo/shop/foreign foreign owner=other-set", "demo/shop/legacy legacy-old owner=", "demo/shop/manual manual owner=",
		"demo/shop/web web-v2 owner=shop", "demo/shop/worker worker owner=shop")

	// Errors.
	s.mustRun(t, 1, admin, "apply", "-f", invalid)
	s.mustRun(t, 2, admin, "apply", "-f", unknownCluster)
	s.mustRun(t, 3, ro, "apply", "-f", v1)
	s.mustRun(t, 1, admin, "apply")
	s.mustRun(t, 1, admin, "apply", "-f", filepath.Join(dir, "missing.yaml"))
	golden(t, "apply", strings.ReplaceAll(strings.ReplaceAll(s.transcript.String(), s.url, "http://SERVER"), dir, "DIR"))
}

func TestParseAssociationSetErrors(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"not an object", "- a\n- b\n", "must be an AssociationSet object"},
		{"bad yaml", "a: [b\n", "not valid YAML"},
		{"missing everything", "{}", "apiVersion: required\n  kind: required\n  metadata: required\n  spec: required"},
		{"associations missing", "apiVersion: podid.io/v1\nkind: AssociationSet\nmetadata: {name: a}\nspec: {}\n", "spec.associations: required"},
		{"associations not a list", "apiVersion: podid.io/v1\nkind: AssociationSet\nmetadata: {name: a}\nspec: {associations: 3}\n", "spec.associations: must be a list"},
		{"empty is fine", "apiVersion: podid.io/v1\nkind: AssociationSet\nmetadata: {name: a}\nspec: {associations: []}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseAssociationSet([]byte(tc.file))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
