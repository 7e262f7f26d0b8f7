package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/google/go-cmp/cmp"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
)

var update = flag.Bool("update", false, "rewrite golden files")

func (e *env) createAssociation(t testing.TB, cluster, ns, sa string, mod func(*eks.CreatePodIdentityAssociationInput)) string {
	t.Helper()
	in := &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(cluster), Namespace: aws.String(ns), ServiceAccount: aws.String(sa), RoleArn: aws.String(testRole),
	}
	if mod != nil {
		mod(in)
	}
	out, err := e.eksClient(e.keys[auth.ScopeAdmin]).CreatePodIdentityAssociation(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Association.AssociationId)
}

// postAssume sends a raw signed AssumeRoleForPodIdentity and returns the
// status, error type header and body.
func (e *env) postAssume(t testing.TB, k auth.Key, cluster string, body []byte) (int, string, []byte) {
	t.Helper()
	return e.signedRaw(t, k, "eks-auth", http.MethodPost, "/clusters/"+cluster+"/assume-role-for-pod-identity", body)
}

func (e *env) signedRaw(t testing.TB, k auth.Key, service, method, path string, body []byte) (int, string, []byte) {
	t.Helper()
	return e.signedRawAt(t, time.Now(), k, service, method, path, body)
}

// signedRawAt signs as of at, to test the skew window.
func (e *env) signedRawAt(t testing.TB, at time.Time, k auth.Key, service, method, path string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := api.SignRequest(context.Background(), req, creds(k), service, testRegion, body, at); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), raw
}

func TestAssumeRoleForPodIdentity(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	id := e.createAssociation(t, "cluster-a", "shop", "checkout", nil)

	status, _, body := e.postAssume(t, e.agent, "cluster-a", mustJSON(t, api.AssumeRoleForPodIdentityRequest{
		Token: fixture(t, "cluster-a/token-pod-bound.jwt"), EksNodeName: "node-1",
	}))
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var out api.AssumeRoleForPodIdentityResponse
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if out.PodIdentityAssociation.AssociationID != id {
		t.Errorf("associationId = %q, want %q", out.PodIdentityAssociation.AssociationID, id)
	}
	if exp := out.Credentials.Expiration.Time(); exp.Before(time.Now().Add(5*time.Hour)) || exp.After(time.Now().Add(7*time.Hour)) {
		t.Errorf("expiration %v is not about 6h ahead", exp)
	}
	golden(t, "assume-response.golden.json", normalize(body, id))

	calls := e.sts.Calls()
	if len(calls) != 1 {
		t.Fatalf("STS saw %d calls, want 1", len(calls))
	}
	call := calls[0]
	wantTags := []string{
		"eks-cluster-arn=arn:aws:eks:us-east-1:111122223333:cluster/cluster-a",
		"eks-cluster-name=cluster-a",
		"kubernetes-namespace=shop",
		"kubernetes-service-account=checkout",
		"kubernetes-pod-name=checkout-7d4b9c-x2x9q",
		"kubernetes-pod-uid=117657c3-b52a-4b32-9edc-c292f5ca4219",
	}
	var gotTags []string
	for _, tg := range call.Tags {
		gotTags = append(gotTags, tg.Key+"="+tg.Value)
	}
	if diff := cmp.Diff(wantTags, gotTags); diff != "" {
		t.Errorf("session tags (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"eks-cluster-arn", "eks-cluster-name", "kubernetes-namespace", "kubernetes-service-account", "kubernetes-pod-name", "kubernetes-pod-uid"}, call.TransitiveTagKeys); diff != "" {
		t.Errorf("transitive keys (-want +got):\n%s", diff)
	}
	if !regexp.MustCompile(`^eks-cluster-a-checkout-7d4b9c-x2x9q-[a-z0-9]{8}$`).MatchString(call.RoleSessionName) {
		t.Errorf("role session name %q", call.RoleSessionName)
	}
	if call.RoleARN != testRole || call.DurationSeconds != 6*3600 || call.ExternalID != "" {
		t.Errorf("STS call role=%q duration=%d externalId=%q", call.RoleARN, call.DurationSeconds, call.ExternalID)
	}
}

func TestAssumeRoleDisableSessionTagsAndTargetRole(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
	e.createAssociation(t, "cluster-a", "shop", "checkout", func(in *eks.CreatePodIdentityAssociationInput) {
		in.DisableSessionTags = aws.Bool(true)
		in.Policy = aws.String(policy)
		in.TargetRoleArn = aws.String("arn:aws:iam::444455556666:role/target")
	})
	desc, err := e.eksClient(e.keys[auth.ScopeAdmin]).ListPodIdentityAssociations(context.Background(), &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a")})
	if err != nil || len(desc.Associations) != 1 {
		t.Fatal(err)
	}
	full, err := e.eksClient(e.keys[auth.ScopeAdmin]).DescribePodIdentityAssociation(context.Background(), &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: desc.Associations[0].AssociationId})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.apiClient(e.agent).AssumeRoleForPodIdentity(context.Background(), "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: fixture(t, "cluster-a/token-pod-bound.jwt")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.AssumedRoleUser.Arn, ":assumed-role/target/") {
		t.Errorf("assumed role %q is not the target role", out.AssumedRoleUser.Arn)
	}
	calls := e.sts.Calls()
	if len(calls) != 2 {
		t.Fatalf("STS saw %d calls, want 2 (role, then target role)", len(calls))
	}
	first, second := calls[0], calls[1]
	if len(first.Tags) != 0 || first.ExternalID != "us-east-1/111122223333/cluster-a/shop/checkout" || first.Policy != policy {
		t.Errorf("first call tags=%v externalId=%q policy=%q", first.Tags, first.ExternalID, first.Policy)
	}
	if second.RoleARN != "arn:aws:iam::444455556666:role/target" || second.DurationSeconds > 3600 || second.ExternalID != aws.ToString(full.Association.ExternalId) {
		t.Errorf("chained call role=%q duration=%d externalId=%q (association externalId %q)", second.RoleARN, second.DurationSeconds, second.ExternalID, aws.ToString(full.Association.ExternalId))
	}
	if second.CallerAccessKeyID == first.CallerAccessKeyID {
		t.Error("the chained call was not signed with the first role's credentials")
	}
}

var (
	credRE   = regexp.MustCompile(`"(accessKeyId|secretAccessKey|sessionToken)":"[^"]*"`)
	expRE    = regexp.MustCompile(`"expiration":[0-9.]+`)
	roleIDRE = regexp.MustCompile(`"assumeRoleId":"[^"]*"`)
	sessRE   = regexp.MustCompile(`x2x9q-[a-z0-9]{8}`)
)

// normalize replaces the values that differ per run with placeholders.
func normalize(body []byte, associationID string) []byte {
	b := credRE.ReplaceAll(body, []byte(`"${1}":"__${1}__"`))
	b = expRE.ReplaceAll(b, []byte(`"expiration":0`))
	b = roleIDRE.ReplaceAll(b, []byte(`"assumeRoleId":"__assumeRoleId__"`))
	b = sessRE.ReplaceAll(b, []byte(`x2x9q-__suffix__`))
	return bytes.ReplaceAll(b, []byte(associationID), []byte("__associationId__"))
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(bytes.TrimSpace(want)), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
