package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/smithy-go"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
)

// TestAssumeRoleErrors has one case per EKS Auth error that can happen here.
func TestAssumeRoleErrors(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	podToken := fixture(t, "cluster-a/token-pod-bound.jwt")

	for _, tc := range []struct {
		name       string
		cluster    string
		body       string
		setup      func()
		key        *auth.Key
		wantStatus int
		wantType   string
		wantInMsg  string
	}{
		{name: "wrong audience", body: tokenBody(fixture(t, "cluster-a/token-wrong-audience.jwt")), wantStatus: 400, wantType: "InvalidTokenException", wantInMsg: "audience"},
		{name: "not pod bound", body: tokenBody(fixture(t, "cluster-a/token-not-pod-bound.jwt")), wantStatus: 400, wantType: "InvalidTokenException", wantInMsg: "pod"},
		{name: "other cluster's token", body: tokenBody(fixture(t, "cluster-b/token-pod-bound.jwt")), wantStatus: 400, wantType: "InvalidTokenException"},
		{name: "garbage token", body: tokenBody("a.b.c"), wantStatus: 400, wantType: "InvalidTokenException"},
		{name: "expired token", body: tokenBody(podToken), setup: func() { e.clock.Set(tokenTime.Add(48 * time.Hour)) }, wantStatus: 400, wantType: "ExpiredTokenException"},
		{name: "missing token", body: `{}`, wantStatus: 400, wantType: "InvalidParameterException", wantInMsg: "token"},
		{name: "token of wrong type", body: `{"token":42}`, wantStatus: 400, wantType: "InvalidParameterException", wantInMsg: "token"},
		{name: "not JSON", body: `{"token":`, wantStatus: 400, wantType: "InvalidRequestException", wantInMsg: "JSON"},
		{name: "bad cluster name", cluster: "-bad", body: tokenBody(podToken), key: ptr(e.keys[auth.ScopeAdmin]), wantStatus: 400, wantType: "InvalidParameterException", wantInMsg: "clusterName"},
		{name: "unknown cluster", cluster: "cluster-z", body: tokenBody(podToken), key: ptr(e.keys[auth.ScopeAdmin]), wantStatus: 404, wantType: "ResourceNotFoundException", wantInMsg: "cluster-z"},
		{name: "no association", cluster: "cluster-b", body: tokenBody(fixture(t, "cluster-b/token-pod-bound.jwt")), key: ptr(e.keys[auth.ScopeAdmin]), wantStatus: 404, wantType: "ResourceNotFoundException", wantInMsg: "checkout"},
		{name: "node mismatch", body: `{"token":"` + podToken + `","eksNodeName":"node-9"}`, wantStatus: 400, wantType: "AccessDeniedException", wantInMsg: "node-1"},
		{name: "STS denies the role", body: tokenBody(podToken), setup: func() { e.sts.DenyRole(testRole) }, wantStatus: 400, wantType: "AccessDeniedException", wantInMsg: "checkout"},
		{name: "STS throttles", body: tokenBody(podToken), setup: func() { e.sts.FailNextN(5, "Throttling", 400, "Rate exceeded") }, wantStatus: 429, wantType: "ThrottlingException"},
		{name: "STS is down", body: tokenBody(podToken), setup: func() { e.sts.FailNextN(5, "InternalFailure", 500, "boom") }, wantStatus: 503, wantType: "ServiceUnavailableException"},
		{name: "server's AWS credentials rejected", body: tokenBody(podToken), setup: func() {
			e.sts.FailNextN(5, "InvalidClientTokenId", 403, "The security token included in the request is invalid.")
		}, wantStatus: 500, wantType: "InternalServerException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.clock.Set(tokenTime)
			e.sts.Reset()
			if tc.setup != nil {
				tc.setup()
			}
			cluster := tc.cluster
			if cluster == "" {
				cluster = "cluster-a"
			}
			key := e.agent
			if tc.key != nil {
				key = *tc.key
			}
			status, typ, body := e.postAssume(t, key, cluster, []byte(tc.body))
			if status != tc.wantStatus || typ != tc.wantType {
				t.Fatalf("got %d %s, want %d %s: %s", status, typ, tc.wantStatus, tc.wantType, body)
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Type != tc.wantType || eb.Message == "" {
				t.Fatalf("error body %s is not the AWS shape (%v)", body, err)
			}
			if !strings.Contains(eb.Message, tc.wantInMsg) {
				t.Errorf("message %q does not mention %q", eb.Message, tc.wantInMsg)
			}
			if strings.Contains(string(body), podToken[:40]) {
				t.Error("the response echoes the token")
			}
		})
	}
}

func tokenBody(tok string) string { return `{"token":"` + tok + `"}` }

// TestAuthentication checks signatures and key scopes on every API.
func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	id := e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	token := tokenBody(fixture(t, "cluster-a/token-pod-bound.jwt"))
	wrongSecret := e.keys[auth.ScopeAdmin]
	wrongSecret.SecretAccessKey = strings.Repeat("x", 40)
	unknown := wrongSecret
	unknown.AccessKeyID = "PODIDUNKNOWN0000000"
	assocPath := "/clusters/cluster-a/pod-identity-associations"

	for _, tc := range []struct {
		name     string
		key      *auth.Key // nil: unsigned
		service  string
		method   string
		path     string
		body     string
		wantType string // "" means allowed
	}{
		{name: "unsigned list", service: "eks", method: "GET", path: assocPath, wantType: "MissingAuthenticationTokenException"},
		{name: "unsigned assume", service: "eks-auth", method: "POST", path: "/clusters/cluster-a/assume-role-for-pod-identity", body: token, wantType: "MissingAuthenticationTokenException"},
		{name: "wrong secret", key: &wrongSecret, service: "eks", method: "GET", path: assocPath, wantType: "InvalidSignatureException"},
		{name: "unknown key", key: &unknown, service: "eks", method: "GET", path: assocPath, wantType: "UnrecognizedClientException"},
		{name: "signed for the wrong service", key: ptr(e.keys[auth.ScopeAdmin]), service: "eks-auth", method: "GET", path: assocPath, wantType: "InvalidSignatureException"},
		{name: "read-only lists", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks", method: "GET", path: assocPath},
		{name: "read-only describes", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks", method: "GET", path: assocPath + "/" + id},
		{name: "read-only creates", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks", method: "POST", path: assocPath, body: `{"namespace":"a","serviceAccount":"b","roleArn":"` + testRole + `"}`, wantType: "AccessDeniedException"},
		{name: "read-only deletes", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks", method: "DELETE", path: assocPath + "/" + id, wantType: "AccessDeniedException"},
		{name: "read-only assumes", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks-auth", method: "POST", path: "/clusters/cluster-a/assume-role-for-pod-identity", body: token, wantType: "AccessDeniedException"},
		{name: "read-only registers a cluster", key: ptr(e.keys[auth.ScopeReadOnly]), service: "eks", method: "POST", path: "/podid/v1/clusters", body: `{}`, wantType: "AccessDeniedException"},
		{name: "agent lists associations", key: &e.agent, service: "eks", method: "GET", path: assocPath, wantType: "AccessDeniedException"},
		{name: "agent reads the audit ledger", key: &e.agent, service: "eks", method: "GET", path: "/podid/v1/audit", wantType: "AccessDeniedException"},
		{name: "agent of cluster-a asks for cluster-b", key: &e.agent, service: "eks-auth", method: "POST", path: "/clusters/cluster-b/assume-role-for-pod-identity", body: tokenBody(fixture(t, "cluster-b/token-pod-bound.jwt")), wantType: "AccessDeniedException"},
		{name: "agent of cluster-a assumes", key: &e.agent, service: "eks-auth", method: "POST", path: "/clusters/cluster-a/assume-role-for-pod-identity", body: token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var status int
			var typ string
			var body []byte
			if tc.key == nil {
				req, _ := http.NewRequest(tc.method, e.url+tc.path, strings.NewReader(tc.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				status, typ = resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType")
			} else {
				status, typ, body = e.signedRaw(t, *tc.key, tc.service, tc.method, tc.path, []byte(tc.body))
			}
			if tc.wantType == "" {
				if status != http.StatusOK {
					t.Fatalf("denied: %d %s %s", status, typ, body)
				}
				return
			}
			if status != http.StatusForbidden || typ != tc.wantType {
				t.Fatalf("got %d %s, want 403 %s: %s", status, typ, tc.wantType, body)
			}
		})
	}

	// A request captured and replayed after the 5-minute skew window.
	for _, at := range []time.Time{time.Now().Add(-6 * time.Minute), time.Now().Add(6 * time.Minute)} {
		status, typ, _ := e.signedRawAt(t, at, e.keys[auth.ScopeAdmin], "eks", "GET", assocPath, nil)
		if status != http.StatusForbidden || typ != "InvalidSignatureException" {
			t.Errorf("request signed at %v: %d %s, want 403 InvalidSignatureException", at, status, typ)
		}
	}

	// The real SDK surfaces the 403 as an API error with the AWS name.
	_, err := e.eksClient(wrongSecret).ListPodIdentityAssociations(context.Background(), &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSignatureException" {
		t.Errorf("SDK error = %v, want InvalidSignatureException", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestBadInput sends malformed requests: each gets a 4xx in the AWS shape
// and the store is unchanged.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	id := e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	admin := e.keys[auth.ScopeAdmin]
	assocPath := "/clusters/cluster-a/pod-identity-associations"
	big := `{"namespace":"` + strings.Repeat("a", 2<<20) + `"}`

	for _, tc := range []struct {
		name, method, path, body string
		wantStatus               int
		wantType, wantInMsg      string
	}{
		{"malformed JSON", "POST", assocPath, `{"namespace":`, 400, "InvalidRequestException", "JSON"},
		{"array body", "POST", assocPath, `[1,2]`, 400, "InvalidParameterException", "object"},
		{"trailing data", "POST", assocPath, `{} {}`, 400, "InvalidRequestException", "after"},
		{"oversize body", "POST", assocPath, big, 413, "InvalidRequestException", "larger"},
		{"namespace is a number", "POST", assocPath, `{"namespace":5,"serviceAccount":"a","roleArn":"` + testRole + `"}`, 400, "InvalidParameterException", "namespace"},
		{"tags is a list", "POST", assocPath, `{"namespace":"a","serviceAccount":"a","roleArn":"` + testRole + `","tags":["x"]}`, 400, "InvalidParameterException", "tags"},
		{"tag value is a number", "POST", assocPath, `{"namespace":"a","serviceAccount":"a","roleArn":"` + testRole + `","tags":{"x":1}}`, 400, "InvalidParameterException", "tags"},
		{"disableSessionTags is a string", "POST", assocPath, `{"namespace":"a","serviceAccount":"a","roleArn":"` + testRole + `","disableSessionTags":"yes"}`, 400, "InvalidParameterException", "disableSessionTags"},
		{"missing roleArn", "POST", assocPath, `{"namespace":"a","serviceAccount":"a"}`, 400, "InvalidParameterException", "roleArn"},
		{"role ARN of another service", "POST", assocPath, `{"namespace":"a","serviceAccount":"a","roleArn":"arn:aws:iam::111122223333:user/bob"}`, 400, "InvalidParameterException", "roleArn"},
		{"namespace too long", "POST", assocPath, `{"namespace":"` + strings.Repeat("a", 64) + `","serviceAccount":"a","roleArn":"` + testRole + `"}`, 400, "InvalidParameterException", "namespace"},
		{"invalid cluster name", "POST", "/clusters/bad.name/pod-identity-associations", `{"namespace":"a","serviceAccount":"a","roleArn":"` + testRole + `"}`, 400, "InvalidParameterException", "clusterName"},
		{"update with bad target", "POST", assocPath + "/" + id, `{"targetRoleArn":"nope"}`, 400, "InvalidParameterException", "targetRoleArn"},
		{"maxResults not a number", "GET", assocPath + "?maxResults=ten", "", 400, "InvalidParameterException", "maxResults"},
		{"maxResults zero", "GET", assocPath + "?maxResults=0", "", 400, "InvalidParameterException", "maxResults"},
		{"unknown route", "GET", "/clusters/cluster-a/nodegroups", "", 404, "UnknownOperationException", "nodegroups"},
		{"register cluster without keys", "POST", "/podid/v1/clusters", `{"name":"c","issuer":"https://c"}`, 400, "InvalidParameterException", "keys"},
		{"register cluster with bad JWKS", "POST", "/podid/v1/clusters", `{"name":"c","issuer":"https://c","keys":{"kind":"jwks","jwks":"{}"}}`, 400, "InvalidParameterException", "keys"},
		{"register existing cluster", "POST", "/podid/v1/clusters", `{"name":"cluster-a","issuer":"https://c","keys":{"kind":"jwks","jwks":` + jsonString(fixture(t, "cluster-a/jwks.json")) + `}}`, 409, "ResourceInUseException", "cluster-a"},
		{"audit nextToken forged", "GET", "/podid/v1/audit?nextToken=zzz", "", 400, "InvalidParameterException", "nextToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, typ, body := e.signedRaw(t, admin, "eks", tc.method, tc.path, []byte(tc.body))
			if status != tc.wantStatus || typ != tc.wantType {
				t.Fatalf("got %d %s, want %d %s: %.300s", status, typ, tc.wantStatus, tc.wantType, body)
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Type != tc.wantType {
				t.Fatalf("error body %.300s is not the AWS shape (%v)", body, err)
			}
			if !strings.Contains(eb.Message, tc.wantInMsg) {
				t.Errorf("message %q does not mention %q", eb.Message, tc.wantInMsg)
			}
		})
	}
	ctx := context.Background()
	as, err := e.store.ListAssociations(ctx, identity.AssociationFilter{Cluster: "cluster-a"})
	if err != nil || len(as) != 1 || as[0].ID != id || as[0].RoleARN != testRole {
		t.Errorf("store changed: %+v, %v", as, err)
	}
	cs, err := e.store.ListClusters(ctx)
	if err != nil || len(cs) != 2 {
		t.Errorf("clusters changed: %d, %v", len(cs), err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestAuditLedger checks that issuances and denials are recorded without
// secrets and can be paged through.
func TestAuditLedger(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	id := e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	ctx := context.Background()
	agent := e.apiClient(e.agent)
	podToken := fixture(t, "cluster-a/token-pod-bound.jwt")
	var secrets []string
	for range 3 {
		out, err := agent.AssumeRoleForPodIdentity(ctx, "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: podToken})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, out.Credentials.SecretAccessKey, out.Credentials.SessionToken)
	}
	_, err := agent.AssumeRoleForPodIdentity(ctx, "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: fixture(t, "cluster-a/token-wrong-audience.jwt")})
	if api.ErrorType(err) != "InvalidTokenException" {
		t.Fatalf("wrong audience: %v", err)
	}

	var events []api.AuditEvent
	next := ""
	for pages := 0; ; pages++ {
		page, err := e.admin().ListAuditEvents(ctx, "cluster-a", 3, next)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, page.Events...)
		if page.NextToken == nil {
			break
		}
		next = *page.NextToken
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(events) != 4 {
		t.Fatalf("ledger has %d events, want 4: %+v", len(events), events)
	}
	denied := events[0] // newest first
	if denied.Outcome != "denied" || denied.ErrorType != "InvalidTokenException" || denied.Message == "" {
		t.Errorf("denial recorded as %+v", denied)
	}
	for _, ev := range events[1:] {
		if ev.Outcome != "issued" || ev.AssociationID != id || ev.RoleArn != testRole || ev.PodName != "checkout-7d4b9c-x2x9q" ||
			ev.PodUID != "117657c3-b52a-4b32-9edc-c292f5ca4219" || ev.NodeName != "node-1" || ev.Namespace != "shop" ||
			ev.ServiceAccount != "checkout" || ev.STSRequestID == "" || ev.Time.Time().IsZero() {
			t.Errorf("issuance recorded as %+v", ev)
		}
	}
	for i := 1; i < len(events); i++ {
		if events[i].ID >= events[i-1].ID {
			t.Errorf("events not newest first: %d after %d", events[i].ID, events[i-1].ID)
		}
	}
	raw, _ := json.Marshal(events)
	for _, s := range append(secrets, podToken[:40]) {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the ledger holds a secret or token")
		}
	}
	other, err := e.admin().ListAuditEvents(ctx, "cluster-b", 0, "")
	if err != nil || len(other.Events) != 0 {
		t.Errorf("cluster-b ledger = %+v, %v", other, err)
	}
}
