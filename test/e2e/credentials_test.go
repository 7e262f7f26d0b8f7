//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	awssts "github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
)

// TestCredentialsThroughAgent is the whole chain a pod relies on: the API
// server mints a pod-bound token, the AWS SDK's container credentials
// provider hands it to podid agent, the agent to podid server, the server
// to STS with the six session tags of that pod; the credentials that come
// back are a working STS session.
func TestCredentialsThroughAgent(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	w := newWorkload(t, e.a, uniqueName("creds"), "app")
	role := roleARN("creds")
	assocID, err := e.createAssociation(ctx, clusterA, w.ns, w.sa, role)
	if err != nil {
		t.Fatal(err)
	}
	token := w.token(t)
	tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(e.sts.Calls())

	// What the SDK does with AWS_CONTAINER_CREDENTIALS_FULL_URI and
	// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: read the file on every fetch.
	provider := endpointcreds.New(e.agent.URL, func(o *endpointcreds.Options) {
		o.AuthorizationTokenProvider = endpointcreds.TokenProviderFunc(func() (string, error) {
			b, err := os.ReadFile(tokenFile)
			return string(b), err
		})
	})
	creds, err := provider.Retrieve(ctx)
	if err != nil {
		t.Fatalf("the SDK's container credentials provider through podid agent: %v\nagent log:\n%s\nserver log:\n%s",
			err, e.agent.Process.Tail(20), e.server.Process.Tail(20))
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.SessionToken == "" || !creds.CanExpire || !creds.Expires.After(time.Now()) {
		t.Fatalf("credentials incomplete: key %q, secret set %v, token set %v, expires %v",
			creds.AccessKeyID, creds.SecretAccessKey != "", creds.SessionToken != "", creds.Expires)
	}

	calls := e.sts.Calls()[before:]
	if len(calls) != 1 {
		t.Fatalf("STS saw %d AssumeRole calls, want 1: %+v", len(calls), calls)
	}
	call := calls[0]
	if call.ErrorCode != "" || call.AccessKeyID != creds.AccessKeyID {
		t.Errorf("STS call issued %q (error %q), the pod got %q", call.AccessKeyID, call.ErrorCode, creds.AccessKeyID)
	}
	if call.RoleARN != role {
		t.Errorf("STS RoleArn = %q, want %q", call.RoleARN, role)
	}
	if prefix := "eks-" + clusterA + "-" + w.pod.Name + "-"; !strings.HasPrefix(call.RoleSessionName, prefix) {
		t.Errorf("RoleSessionName = %q, want prefix %q", call.RoleSessionName, prefix)
	}
	wantTags := []identity.Tag{
		{Key: "eks-cluster-arn", Value: "arn:aws:eks:" + region + ":" + account + ":cluster/" + clusterA},
		{Key: "eks-cluster-name", Value: clusterA},
		{Key: "kubernetes-namespace", Value: w.ns},
		{Key: "kubernetes-service-account", Value: w.sa},
		{Key: "kubernetes-pod-name", Value: w.pod.Name},
		{Key: "kubernetes-pod-uid", Value: string(w.pod.UID)},
	}
	if diff := cmp.Diff(wantTags, call.Tags); diff != "" {
		t.Errorf("session tags STS saw (-want +got):\n%s", diff)
	}
	var wantKeys []string
	for _, tag := range wantTags {
		wantKeys = append(wantKeys, tag.Key)
	}
	if diff := cmp.Diff(wantKeys, call.TransitiveTagKeys); diff != "" {
		t.Errorf("transitive tag keys (-want +got):\n%s", diff)
	}

	// The credentials are a real session of the fake STS.
	who, err := awssts.New(awssts.Options{BaseEndpoint: aws.String(e.sts.URL), Region: region, Credentials: aws.NewCredentialsCache(provider)}).
		GetCallerIdentity(ctx, &awssts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity with the pod's credentials: %v", err)
	}
	if want := "arn:aws:sts::" + account + ":assumed-role/e2e-creds/" + call.RoleSessionName; aws.ToString(who.Arn) != want {
		t.Errorf("caller = %q, want %q", aws.ToString(who.Arn), want)
	}

	t.Run("agent wire format and cache", func(t *testing.T) {
		status, body := agentGet(t, e.agent.URL, token)
		if status != http.StatusOK {
			t.Fatalf("agent: HTTP %d %s", status, body)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"AccessKeyId", "SecretAccessKey", "Token", "AccountId", "Expiration"} {
			if _, ok := got[k]; !ok {
				t.Errorf("agent response lacks %s: keys %v", k, keysOf(got))
			}
		}
		if got["AccessKeyId"] != creds.AccessKeyID || got["AccountId"] != account {
			t.Errorf("agent answered AccessKeyId %v AccountId %v, want the cached %s and %s", got["AccessKeyId"], got["AccountId"], creds.AccessKeyID, account)
		}
		if _, err := time.Parse(time.RFC3339, got["Expiration"].(string)); err != nil {
			t.Errorf("Expiration is not RFC 3339: %v", err)
		}
		if n := len(e.sts.Calls()) - before; n != 1 {
			t.Errorf("STS saw %d calls after a repeated fetch with the same token, want 1 (the agent caches per token)", n)
		}
	})

	t.Run("audit", func(t *testing.T) {
		out, err := e.server.Client().ListAuditEvents(ctx, clusterA, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range out.Events {
			if ev.PodUID != string(w.pod.UID) {
				continue
			}
			want := api.AuditEvent{
				Cluster: clusterA, Namespace: w.ns, ServiceAccount: w.sa, PodName: w.pod.Name, PodUID: string(w.pod.UID),
				NodeName: "e2e-node", AssociationID: assocID, RoleArn: role, Outcome: identity.OutcomeIssued, STSRequestID: call.RequestID,
			}
			if diff := cmp.Diff(want, ev, cmpopts.IgnoreFields(api.AuditEvent{}, "ID", "Time", "Message")); diff != "" {
				t.Errorf("audit event (-want +got):\n%s", diff)
			}
			return
		}
		t.Errorf("no audit event for pod uid %s among %d events", w.pod.UID, len(out.Events))
	})
}

// TestTokenFromOtherClusterRefused: cluster B has the same namespace and
// service account as A, and both have an association. B's genuine token
// works for B and is refused for A, and for a cluster registered with B's
// issuer but A's keys (the signature, not just the issuer, is checked).
func TestTokenFromOtherClusterRefused(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	ns, sa := uniqueName("cross"), "app"
	newWorkload(t, e.a, ns, sa)
	wb := newWorkload(t, e.b, ns, sa)
	for _, c := range []string{clusterA, clusterB} {
		if _, err := e.createAssociation(ctx, c, ns, sa, roleARN("cross")); err != nil {
			t.Fatal(err)
		}
	}
	tokB := wb.token(t)
	agentKey := &api.Client{Endpoint: e.server.URL, Credentials: e.server.Agent.Provider(), Region: region}

	out, err := agentKey.AssumeRoleForPodIdentity(ctx, clusterB, api.AssumeRoleForPodIdentityRequest{Token: tokB})
	if err != nil {
		t.Fatalf("B's token for cluster B: %v", err)
	}
	if out.Subject != (api.Subject{Namespace: ns, ServiceAccount: sa}) {
		t.Errorf("subject = %+v", out.Subject)
	}
	before := len(e.sts.Calls())

	_, err = agentKey.AssumeRoleForPodIdentity(ctx, clusterA, api.AssumeRoleForPodIdentityRequest{Token: tokB})
	if got := api.ErrorType(err); got != "InvalidTokenException" {
		t.Errorf("B's token for cluster A: error %v, want InvalidTokenException", err)
	}
	if status, body := agentGet(t, e.agent.URL, tokB); status != http.StatusBadRequest {
		t.Errorf("B's token through A's agent: HTTP %d %s, want 400", status, body)
	}

	t.Run("same issuer, other keys", func(t *testing.T) {
		const twin = "e2e-a-twin"
		jwksA, err := e.a.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		admin := e.server.Client()
		if _, err := admin.RegisterCluster(ctx, api.Cluster{Name: twin, Issuer: e.b.Issuer, Keys: api.KeySource{Kind: identity.KeysJWKS, JWKS: string(jwksA)}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.DeleteCluster(t.Context(), twin) })
		if _, err := e.createAssociation(ctx, twin, ns, sa, roleARN("cross")); err != nil {
			t.Fatal(err)
		}
		_, err = agentKey.AssumeRoleForPodIdentity(ctx, twin, api.AssumeRoleForPodIdentityRequest{Token: tokB})
		if got := api.ErrorType(err); got != "InvalidTokenException" {
			t.Errorf("B's token for a cluster with B's issuer and A's keys: error %v, want InvalidTokenException", err)
		}
	})

	if n := len(e.sts.Calls()) - before; n != 0 {
		t.Errorf("STS was called %d times for refused tokens", n)
	}
}

// TestDeletedAssociation: once the association is deleted, a pod's fresh
// token gets 404 through the agent, as from EKS.
func TestDeletedAssociation(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	w := newWorkload(t, e.a, uniqueName("deleted"), "app")
	id, err := e.createAssociation(ctx, clusterA, w.ns, w.sa, roleARN("deleted"))
	if err != nil {
		t.Fatal(err)
	}
	if status, body := agentGet(t, e.agent.URL, w.token(t)); status != http.StatusOK {
		t.Fatalf("before deletion: HTTP %d %s", status, body)
	}
	if _, err := e.eks.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{ClusterName: aws.String(clusterA), AssociationId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.eks.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String(clusterA), AssociationId: aws.String(id)})
	var nf *ekstypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("DescribePodIdentityAssociation after delete: %v, want ResourceNotFoundException", err)
	}
	// A fresh token: the agent rightly serves a cached answer for the old
	// one until it is renewed.
	if status, body := agentGet(t, e.agent.URL, w.token(t)); status != http.StatusNotFound {
		t.Errorf("after deletion: HTTP %d %s, want 404", status, body)
	}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
