package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s/k8stest"
)

// TestTokenAttacks is the token attack table of docs/security.md: each
// forged or misused token is refused through the whole server stack, with
// the error a client can act on, and nothing reaches STS.
func TestTokenAttacks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mk := func(name string) *k8stest.Issuer {
		iss, err := k8stest.NewIssuer("https://"+name+".attack.test", "RS256")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin().RegisterCluster(ctx, api.Cluster{Name: name, Issuer: iss.URL, Keys: api.KeySource{Kind: identity.KeysJWKS, JWKS: iss.JWKS()}}); err != nil {
			t.Fatal(err)
		}
		e.createAssociation(t, name, "shop", "checkout", nil)
		return iss
	}
	a, b := mk("cluster-a"), mk("cluster-b")
	// A key nobody registered, claiming cluster-a's issuer.
	rogue, err := k8stest.NewIssuer(a.URL, "RS256")
	if err != nil {
		t.Fatal(err)
	}
	pod := k8stest.Pod{Namespace: "shop", ServiceAccount: "checkout", Name: "checkout-1", NodeName: "node-1"}
	now := tokenTime
	claims := func(mod func(map[string]any)) map[string]any {
		c := a.Claims(pod, now, time.Hour)
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(iss *k8stest.Issuer, c map[string]any) string {
		tok, err := iss.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	b64 := func(v any) string {
		raw, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	// alg confusion: HS256 keyed with the RSA public key's PEM, as a
	// verifier that trusts the header's alg would check it.
	der, _ := x509.MarshalPKIXPublicKey(a.PublicKey())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hsInput := b64(map[string]string{"alg": "HS256", "kid": a.KeyID}) + "." + b64(claims(nil))
	mac := hmac.New(sha256.New, pubPEM)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	none := b64(map[string]string{"alg": "none"}) + "." + b64(claims(nil)) + "."
	unknownKid := func() string {
		parts := strings.Split(sign(a, claims(nil)), ".")
		return b64(map[string]string{"alg": "RS256", "kid": "not-a-registered-kid"}) + "." + parts[1] + "." + parts[2]
	}()

	for _, tc := range []struct {
		name, cluster, token, node, wantType string
	}{
		{name: "valid token (control)", token: sign(a, claims(nil))},
		{name: "wrong audience", token: sign(a, claims(func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} })), wantType: "InvalidTokenException"},
		{name: "wrong issuer", token: sign(a, claims(func(c map[string]any) { c["iss"] = "https://evil.test" })), wantType: "InvalidTokenException"},
		{name: "signed by an unregistered key", token: sign(rogue, claims(nil)), wantType: "InvalidTokenException"},
		{name: "expired", token: sign(a, claims(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() })), wantType: "ExpiredTokenException"},
		{name: "nbf in the future", token: sign(a, claims(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })), wantType: "InvalidTokenException"},
		{name: "alg none", token: none, wantType: "InvalidTokenException"},
		{name: "HS256 keyed with the public key", token: hs256, wantType: "InvalidTokenException"},
		{name: "unknown kid", token: unknownKid, wantType: "InvalidTokenException"},
		{name: "sub disagrees with kubernetes.io", token: sign(a, claims(func(c map[string]any) { c["sub"] = "system:serviceaccount:payments:admin" })), wantType: "InvalidTokenException"},
		{name: "missing pod claim", token: sign(a, claims(func(c map[string]any) { delete(c["kubernetes.io"].(map[string]any), "pod") })), wantType: "InvalidTokenException"},
		{name: "cluster A's token sent for cluster B", cluster: "cluster-b", token: sign(a, claims(nil)), wantType: "InvalidTokenException"},
		{name: "cluster B's token sent for cluster A", token: sign(b, b.Claims(pod, now, time.Hour)), wantType: "InvalidTokenException"},
		{name: "oversize token", token: sign(a, claims(func(c map[string]any) { c["pad"] = strings.Repeat("x", 20<<10) })), wantType: "InvalidTokenException"},
		{name: "non-JWT garbage", token: "this-is-not-a-jwt", wantType: "InvalidTokenException"},
		{name: "pod on node-1 presented for node-2", token: sign(a, claims(nil)), node: "node-2", wantType: "AccessDeniedException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.sts.Reset()
			cluster := tc.cluster
			if cluster == "" {
				cluster = "cluster-a"
			}
			status, typ, body := e.postAssume(t, e.keys[auth.ScopeAdmin], cluster, mustJSON(t, api.AssumeRoleForPodIdentityRequest{Token: tc.token, EksNodeName: tc.node}))
			if tc.wantType == "" {
				if status != 200 {
					t.Fatalf("control case refused: %d %s", status, body)
				}
				return
			}
			if typ != tc.wantType || status >= 500 {
				t.Fatalf("got %d %s, want %s: %s", status, typ, tc.wantType, body)
			}
			if n := len(e.sts.Calls()); n != 0 {
				t.Errorf("a refused token reached STS (%d calls)", n)
			}
		})
	}
	t.Run("deleted pod (live check)", func(t *testing.T) {
		live, err := k8stest.NewIssuer("https://cluster-live.attack.test", "RS256")
		if err != nil {
			t.Fatal(err)
		}
		alive := k8stest.Pod{Namespace: "shop", ServiceAccount: "checkout", Name: "checkout-1", UID: "5d3c7a2e-1111-4c1e-9d53-000000000001", NodeName: "node-1"}
		gone := k8stest.Pod{Namespace: "shop", ServiceAccount: "checkout", Name: "checkout-0", UID: "5d3c7a2e-1111-4c1e-9d53-000000000000", NodeName: "node-1"}
		apiserver := newTokenReviewer(t, "reviewer-token", alive)
		ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiserver.Certificate().Raw}))
		// The same cluster twice: JWKS alone, and JWKS with the live check.
		for name, check := range map[string]string{"cluster-offline": "", "cluster-live": identity.LiveCheckTokenReview} {
			keys := api.KeySource{Kind: identity.KeysJWKS, JWKS: live.JWKS(), LiveCheck: check}
			if check != "" {
				keys.URL, keys.BearerToken, keys.CACert = apiserver.URL, "reviewer-token", ca
			}
			c, err := e.admin().RegisterCluster(ctx, api.Cluster{Name: name, Issuer: live.URL, Keys: keys})
			if err != nil {
				t.Fatalf("registering %s: %v", name, err)
			}
			if c.Keys.LiveCheck != check {
				t.Errorf("%s registered with liveCheck %q, want %q", name, c.Keys.LiveCheck, check)
			}
			e.createAssociation(t, name, "shop", "checkout", nil)
		}
		for _, tc := range []struct {
			cluster  string
			pod      k8stest.Pod
			wantType string
		}{
			{cluster: "cluster-offline", pod: gone}, // what the live check is for
			{cluster: "cluster-live", pod: alive},
			{cluster: "cluster-live", pod: gone, wantType: "InvalidTokenException"},
		} {
			e.sts.Reset()
			status, typ, body := e.postAssume(t, e.keys[auth.ScopeAdmin], tc.cluster, mustJSON(t, api.AssumeRoleForPodIdentityRequest{Token: sign(live, live.Claims(tc.pod, now, time.Hour))}))
			if tc.wantType == "" {
				if status != 200 {
					t.Errorf("%s, pod %s: refused: %d %s", tc.cluster, tc.pod.Name, status, body)
				}
				continue
			}
			if typ != tc.wantType || status != 400 || !strings.Contains(string(body), `not found`) {
				t.Errorf("%s, pod %s: got %d %s, want 400 %s saying the pod is not found: %s", tc.cluster, tc.pod.Name, status, typ, tc.wantType, body)
			}
			if n := len(e.sts.Calls()); n != 0 {
				t.Errorf("a deleted pod's token reached STS (%d calls)", n)
			}
		}
	})
}

// newTokenReviewer emulates a kube-apiserver's TokenReview endpoint: a
// token bound to one of the pods (by uid) is authenticated; any other is
// refused as kube-apiserver refuses the token of a deleted pod.
func newTokenReviewer(t *testing.T, bearer string, pods ...k8stest.Pod) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var tr authv1.TokenReview
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || json.NewDecoder(r.Body).Decode(&tr) != nil {
			t.Errorf("not a TokenReview: %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var claims struct {
			K8s struct {
				Pod struct{ Name, UID string } `json:"pod"`
			} `json:"kubernetes.io"`
		}
		parts := strings.Split(tr.Spec.Token, ".")
		raw, _ := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
		_ = json.Unmarshal(raw, &claims)
		tr.Status = authv1.TokenReviewStatus{Error: fmt.Sprintf("[invalid bearer token, pods %q not found]", claims.K8s.Pod.Name)}
		for _, p := range pods {
			if p.UID == claims.K8s.Pod.UID {
				tr.Status = authv1.TokenReviewStatus{
					Authenticated: true,
					Audiences:     tr.Spec.Audiences,
					User: authv1.UserInfo{
						Username: "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
						Extra: map[string]authv1.ExtraValue{
							"authentication.kubernetes.io/pod-name": {p.Name},
							"authentication.kubernetes.io/pod-uid":  {p.UID},
						},
					},
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(&tr)
	}))
	t.Cleanup(srv.Close)
	return srv
}
