//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/test/e2e/harness"
)

// The namespace and ServiceAccount podid server reviews tokens as, in
// cluster A, as the help of `podid cluster register` describes them.
const (
	reviewerNS = "podid"
	reviewerSA = "podid-reviewer"
)

// TestDeletedPodToken: the API server refuses the token of a deleted pod
// at once, and with `--live-check on` so does podid server, through the
// TokenReview API, once its 10 s memory of the last successful review has
// ended. The same token still works for a cluster registered without the
// live check: the check, not the signature, refuses it. Subtests cover
// `--live-check only` and a reviewer lacking system:auth-delegator.
func TestDeletedPodToken(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	const live = "live"
	if err := ensureReviewer(ctx, e.a, reviewerNS, reviewerSA, true); err != nil {
		t.Fatal(err)
	}
	registerLive(t, e, live, "on")
	admin := e.server.Client()
	got, err := admin.DescribeCluster(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if got.Issuer != e.a.Issuer || got.Keys.Kind != identity.KeysJWKS || got.Keys.LiveCheck != identity.LiveCheckTokenReview || got.Keys.URL != e.a.URL {
		t.Errorf("cluster %q: issuer %q, keys.kind %q, keys.liveCheck %q, keys.url %q; want %q, %q, %q, %q",
			live, got.Issuer, got.Keys.Kind, got.Keys.LiveCheck, got.Keys.URL, e.a.Issuer, identity.KeysJWKS, identity.LiveCheckTokenReview, e.a.URL)
	}

	// Both clusters read tokens of A's API server: `live` with the live
	// check, e2e-a (registered in setup) without.
	w := newWorkload(t, e.a, uniqueName("shop"), "checkout")
	for _, c := range []string{live, clusterA} {
		if _, err := e.createAssociation(ctx, c, w.ns, w.sa, roleARN("checkout")); err != nil {
			t.Fatal(err)
		}
	}
	token := w.token(t)
	agentKey := &api.Client{Endpoint: e.server.URL, Credentials: e.server.Agent.Provider(), Region: region}
	out, err := agentKey.AssumeRoleForPodIdentity(ctx, live, api.AssumeRoleForPodIdentityRequest{Token: token})
	if err != nil {
		t.Fatalf("the live pod's token for cluster %q: %v\nserver log:\n%s", live, err, e.server.Process.Tail(20))
	}
	// podid server remembered that review no later than now.
	reviewed := time.Now()
	if out.Subject != (api.Subject{Namespace: w.ns, ServiceAccount: w.sa}) {
		t.Errorf("subject = %+v, want %s/%s", out.Subject, w.ns, w.sa)
	}

	deletePod(t, e.a, w.ns, w.pod.Name)
	waitRefused(t, e.a, token)

	// Both subtests run while the review of the deleted pod's token is
	// still remembered, so the wait below costs less.
	t.Run("live-check only", func(t *testing.T) { testLiveCheckOnly(t, e) })
	t.Run("reviewer without system:auth-delegator", func(t *testing.T) { testReviewerWithoutRole(t, e) })

	if d := time.Until(reviewed.Add(k8s.DefaultReviewTTL + time.Second)); d > 0 {
		t.Logf("waiting %s for podid server to forget the last successful review", d.Round(100*time.Millisecond))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	before := len(e.sts.Calls())
	_, err = agentKey.AssumeRoleForPodIdentity(ctx, live, api.AssumeRoleForPodIdentityRequest{Token: token})
	var ae *api.APIError
	switch {
	case !errors.As(err, &ae) || ae.Type != "InvalidTokenException" || ae.StatusCode != http.StatusBadRequest:
		t.Errorf("the deleted pod's token for cluster %q: error %v, want InvalidTokenException (HTTP 400)", live, err)
	case !strings.Contains(ae.Message, "invalidated") && !strings.Contains(ae.Message, "not found"):
		t.Errorf("the deleted pod's token: message %q does not say the token was invalidated or the pod not found", ae.Message)
	default:
		t.Logf("refused: %s", ae.Message)
	}
	if n := len(e.sts.Calls()) - before; n != 0 {
		t.Errorf("STS was called %d times for the deleted pod's token", n)
	}

	// Without the live check the signature alone decides, and it is
	// still valid: what refused the token above is the check.
	if _, err := agentKey.AssumeRoleForPodIdentity(ctx, clusterA, api.AssumeRoleForPodIdentityRequest{Token: token}); err != nil {
		t.Errorf("the deleted pod's token for cluster %q, registered without the live check: %v, want credentials", clusterA, err)
	}
}

// testLiveCheckOnly registers A's API server with `--live-check only`:
// no signing keys, every token reviewed, the pod taken from the review.
func testLiveCheckOnly(t *testing.T, e *environment) {
	ctx := t.Context()
	const liveOnly = "live-only"
	registerLive(t, e, liveOnly, "only")
	got, err := e.server.Client().DescribeCluster(ctx, liveOnly)
	if err != nil {
		t.Fatal(err)
	}
	if got.Keys.Kind != identity.KeysTokenReview || got.Keys.JWKS != "" || got.Keys.URL != e.a.URL {
		t.Errorf("cluster %q: keys.kind %q, keys.url %q, %d bytes of JWKS; want %q, %q, none",
			liveOnly, got.Keys.Kind, got.Keys.URL, len(got.Keys.JWKS), identity.KeysTokenReview, e.a.URL)
	}
	w := newWorkload(t, e.a, uniqueName("only"), "checkout")
	if _, err := e.createAssociation(ctx, liveOnly, w.ns, w.sa, roleARN("only")); err != nil {
		t.Fatal(err)
	}
	before := len(e.sts.Calls())
	agentKey := &api.Client{Endpoint: e.server.URL, Credentials: e.server.Agent.Provider(), Region: region}
	out, err := agentKey.AssumeRoleForPodIdentity(ctx, liveOnly, api.AssumeRoleForPodIdentityRequest{Token: w.token(t)})
	if err != nil {
		t.Fatalf("a live pod's token for cluster %q: %v\nserver log:\n%s", liveOnly, err, e.server.Process.Tail(20))
	}
	if out.Subject != (api.Subject{Namespace: w.ns, ServiceAccount: w.sa}) {
		t.Errorf("subject = %+v, want %s/%s", out.Subject, w.ns, w.sa)
	}
	calls := e.sts.Calls()[before:]
	if len(calls) != 1 {
		t.Fatalf("STS saw %d calls, want 1", len(calls))
	}
	tags := map[string]string{}
	for _, tag := range calls[0].Tags {
		tags[tag.Key] = tag.Value
	}
	if tags["kubernetes-pod-name"] != w.pod.Name || tags["kubernetes-pod-uid"] != string(w.pod.UID) {
		t.Errorf("session tags name pod %q uid %q, want %q uid %q (from the review)",
			tags["kubernetes-pod-name"], tags["kubernetes-pod-uid"], w.pod.Name, w.pod.UID)
	}
}

// testReviewerWithoutRole: registration with a ServiceAccount that may not
// create tokenreviews fails, saying which ClusterRole it needs, and
// registers nothing.
func testReviewerWithoutRole(t *testing.T, e *environment) {
	ctx := t.Context()
	const denied = "live-denied"
	sa := "podid-no-review"
	if err := ensureReviewer(ctx, e.a, reviewerNS, sa, false); err != nil {
		t.Fatal(err)
	}
	out, err := runRegister(ctx, e.podid, e.server, denied, e.a.Kubeconfig,
		"--live-check", "on", "--service-account", reviewerNS+"/"+sa)
	if err == nil {
		_ = e.server.Client().DeleteCluster(ctx, denied)
		t.Fatalf("registration with a reviewer lacking system:auth-delegator succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "system:auth-delegator") {
		t.Errorf("registration failed without naming system:auth-delegator:\n%s", out)
	} else {
		t.Logf("refused: %s", out)
	}
	_, err = e.server.Client().DescribeCluster(ctx, denied)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
		t.Errorf("DescribeCluster(%q) after the failed registration: %v, want HTTP 404", denied, err)
	}
}

// registerLive registers cluster A's API server as name with
// `--live-check mode`, reviewing as the reviewer ServiceAccount, and
// deletes it when the test ends.
func registerLive(t *testing.T, e *environment, name, mode string) {
	t.Helper()
	if _, err := runRegister(t.Context(), e.podid, e.server, name, e.a.Kubeconfig,
		"--live-check", mode, "--service-account", reviewerNS+"/"+reviewerSA); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.server.Client().DeleteCluster(context.WithoutCancel(t.Context()), name); err != nil {
			t.Errorf("deleting cluster %q: %v", name, err)
		}
	})
}

// ensureReviewer creates ServiceAccount ns/name in c and, with delegator,
// binds it to system:auth-delegator; it then waits until the authorizer
// agrees on whether it may create tokenreviews (RBAC learns of new bindings
// asynchronously). Objects that exist already are kept.
func ensureReviewer(ctx context.Context, c *harness.Cluster, ns, name string, delegator bool) error {
	if err := ignoreExists(createNamespace(ctx, c, ns)); err != nil {
		return err
	}
	if err := ignoreExists(createServiceAccount(ctx, c, ns, name)); err != nil {
		return err
	}
	if delegator {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "podid-e2e-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}
		_, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
		if err := ignoreExists(err); err != nil {
			return err
		}
	}
	user := "system:serviceaccount:" + ns + ":" + name
	deadline := time.Now().Add(30 * time.Second)
	for {
		sar, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   user,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Group: authenticationv1.GroupName, Resource: "tokenreviews", Verb: "create",
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if sar.Status.Allowed == delegator {
			return nil
		}
		if !delegator || time.Now().After(deadline) {
			return fmt.Errorf("%s: may %s create tokenreviews = %v, want %v", c.Name, user, sar.Status.Allowed, delegator)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// deletePod deletes the pod and waits until it is gone. Without a kubelet
// the pod was never scheduled, so it goes at once.
func deletePod(t *testing.T, c *harness.Cluster, ns, name string) {
	t.Helper()
	ctx := t.Context()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pod %s/%s still there 30 s after deletion (%v)", c.Name, ns, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRefused waits until c's API server refuses token in a TokenReview of
// its own, as it must once the pod the token is bound to is gone.
func waitRefused(t *testing.T, c *harness.Cluster, token string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr, err := c.Client.AuthenticationV1().TokenReviews().Create(t.Context(), &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{identity.Audience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Status.Authenticated {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the API server still authenticates the token of a deleted pod", c.Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
