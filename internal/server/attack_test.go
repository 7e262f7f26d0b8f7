package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

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
		t.Skip("the TokenReview live check is not built yet (webhook issue, item 5); a deleted pod's token is accepted until it expires")
	})
}
