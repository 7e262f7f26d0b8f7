package k8s

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podid/podid/internal/identity"
)

func TestVerifyFixtures(t *testing.T) {
	podA := fixture(t, "cluster-a/token-pod-bound.jwt")
	podB := fixture(t, "cluster-b/token-pod-bound.jwt")
	hA, pA, sA := split3(t, podA)

	wantA := &identity.TokenClaims{
		Issuer:             issuerA,
		Subject:            "system:serviceaccount:shop:checkout",
		Audience:           []string{"pods.eks.amazonaws.com"},
		ID:                 "ff7fda93-bc06-4f70-a6ed-0e506d2ece46",
		IssuedAt:           time.Unix(1795479714, 0),
		NotBefore:          time.Unix(1795479714, 0),
		Expiry:             time.Unix(1795566114, 0),
		Namespace:          "shop",
		ServiceAccountName: "checkout",
		ServiceAccountUID:  "7a0b5668-9b80-4dbb-9267-1258ea0df4e7",
		PodName:            "checkout-7d4b9c-x2x9q",
		PodUID:             "117657c3-b52a-4b32-9edc-c292f5ca4219",
		NodeName:           "node-1",
		NodeUID:            "d1e8e010-d743-431f-84f3-ee7791d187ef",
	}
	wantB := &identity.TokenClaims{
		Issuer:             issuerB,
		Subject:            "system:serviceaccount:shop:checkout",
		Audience:           []string{"pods.eks.amazonaws.com"},
		ID:                 "91b5ad89-6c37-473b-b07f-557f8f384e2f",
		IssuedAt:           time.Unix(1795479757, 0),
		NotBefore:          time.Unix(1795479757, 0),
		Expiry:             time.Unix(1795566157, 0),
		Namespace:          "shop",
		ServiceAccountName: "checkout",
		ServiceAccountUID:  "aa998a1d-6766-4b15-a5c5-05c074eb2ba1",
		PodName:            "checkout-7d4b9c-x2x9q",
		PodUID:             "cc984725-ddeb-4eaa-8b05-c0d884f19702",
		NodeName:           "node-1",
		NodeUID:            "2beefc57-3258-41b6-977c-854335ed31e6",
	}

	// cluster-a's keys under cluster-b's issuer: cluster-b's token then
	// passes the issuer check and must fail on the key.
	aKeysBIssuer := clusterA(t)
	aKeysBIssuer.Issuer = issuerB

	// The HS256 token is keyed with cluster-a's public JWKS, the classic
	// algorithm-confusion forgery.
	mac := hmac.New(sha256.New, []byte(fixture(t, "cluster-a/jwks.json")))
	hsIn := enc(t, map[string]any{"alg": "HS256", "kid": "NIHXVsrFxPLWTH5qwj6Dnlf-QTbuCkjTH8PsxMXulHM"}) + "." + pA
	mac.Write([]byte(hsIn))
	hs256 := hsIn + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	exp := time.Unix(1795566114, 0)
	nbf := time.Unix(1795479714, 0)

	tests := []struct {
		name     string
		cluster  *identity.Cluster
		token    string
		now      time.Time
		want     *identity.TokenClaims
		wantCode identity.Code
		wantMsg  string
	}{
		{name: "cluster-a pod-bound", cluster: clusterA(t), token: podA, want: wantA},
		{name: "cluster-b pod-bound on its ES256 JWKS", cluster: clusterB(t), token: podB, want: wantB},
		{name: "just before exp+leeway", cluster: clusterA(t), token: podA, now: exp.Add(59 * time.Second), want: wantA},
		{name: "just after nbf-leeway", cluster: clusterA(t), token: podA, now: nbf.Add(-59 * time.Second), want: wantA},
		{name: "not pod-bound", cluster: clusterA(t), token: fixture(t, "cluster-a/token-not-pod-bound.jwt"),
			wantCode: identity.CodeInvalidToken, wantMsg: "token is not bound to a pod"},
		{name: "wrong audience", cluster: clusterA(t), token: fixture(t, "cluster-a/token-wrong-audience.jwt"),
			wantCode: identity.CodeInvalidToken, wantMsg: `token audience ["https://cluster-a.podid.test"] does not include "pods.eks.amazonaws.com"`},
		{name: "cluster-b token for cluster-a", cluster: clusterA(t), token: podB,
			wantCode: identity.CodeInvalidToken, wantMsg: `token issuer "https://cluster-b.podid.test" does not match cluster "a" issuer "https://cluster-a.podid.test"`},
		{name: "cluster-b token on cluster-a keys", cluster: aKeysBIssuer, token: podB,
			wantCode: identity.CodeInvalidToken, wantMsg: `token key "0uYKq8JMOTSxJi4IUlghd_9NI_hpCv-kleNYEIqLKPc" (ES256) is not among the signing keys of cluster "a"`},
		{name: "expired", cluster: clusterA(t), token: podA, now: exp.Add(61 * time.Second),
			wantCode: identity.CodeExpiredToken, wantMsg: "token expired at 2026-11-25T00:21:54Z"},
		{name: "not yet valid", cluster: clusterA(t), token: podA, now: nbf.Add(-61 * time.Second),
			wantCode: identity.CodeInvalidToken, wantMsg: "token is not valid before 2026-11-"},
		{name: "tampered signature", cluster: clusterA(t), token: hA + "." + pA + "." + flip(sA, 10),
			wantCode: identity.CodeInvalidToken, wantMsg: `token signature is not valid for the signing keys of cluster "a"`},
		{name: "tampered payload", cluster: clusterA(t), token: hA + "." + reencodeClaims(t, pA, "checkout", "admin") + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "token signature is not valid"},
		{name: "signature from another token", cluster: clusterA(t),
			token:    hA + "." + pA + "." + strings.Split(fixture(t, "cluster-a/token-wrong-audience.jwt"), ".")[2],
			wantCode: identity.CodeInvalidToken, wantMsg: "token signature is not valid"},
		{name: "alg none", cluster: clusterA(t), token: enc(t, map[string]any{"alg": "none"}) + "." + pA + ".",
			wantCode: identity.CodeInvalidToken, wantMsg: `token algorithm "none" is not allowed; want RS256 or ES256`},
		{name: "alg none with signature", cluster: clusterA(t), token: enc(t, map[string]any{"alg": "none"}) + "." + pA + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: `token algorithm "none" is not allowed`},
		{name: "HS256 keyed with the public key", cluster: clusterA(t), token: hs256,
			wantCode: identity.CodeInvalidToken, wantMsg: `token algorithm "HS256" is not allowed`},
		{name: "RS256 header on ES256 token", cluster: clusterB(t),
			token:    enc(t, map[string]any{"alg": "RS256", "kid": "0uYKq8JMOTSxJi4IUlghd_9NI_hpCv-kleNYEIqLKPc"}) + "." + strings.SplitN(podB, ".", 2)[1],
			wantCode: identity.CodeInvalidToken, wantMsg: "is not among the signing keys"},
		{name: "no alg", cluster: clusterA(t), token: enc(t, map[string]any{"kid": "x"}) + "." + pA + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "token header has no alg"},
		{name: "crit header", cluster: clusterA(t), token: enc(t, map[string]any{"alg": "RS256", "crit": []string{"exp"}}) + "." + pA + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "crit"},
		{name: "no signature", cluster: clusterA(t), token: hA + "." + pA + ".",
			wantCode: identity.CodeInvalidToken, wantMsg: "token has no signature"},
		{name: "padded base64", cluster: clusterA(t), token: hA + "." + pA + "." + sA + "==",
			wantCode: identity.CodeInvalidToken, wantMsg: "token signature is not base64url"},
		{name: "two parts", cluster: clusterA(t), token: hA + "." + pA,
			wantCode: identity.CodeInvalidToken, wantMsg: "want 3 dot-separated parts, got 2"},
		{name: "four parts", cluster: clusterA(t), token: podA + ".x",
			wantCode: identity.CodeInvalidToken, wantMsg: "want 3 dot-separated parts, got 4"},
		{name: "garbage", cluster: clusterA(t), token: "this is not a token",
			wantCode: identity.CodeInvalidToken, wantMsg: "token is not a JWT"},
		{name: "garbage parts", cluster: clusterA(t), token: "a%b.c$d.e!f",
			wantCode: identity.CodeInvalidToken, wantMsg: "token header is not base64url"},
		{name: "header not JSON", cluster: clusterA(t), token: b64u([]byte("[1,2")) + "." + pA + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "token header is not a JSON object"},
		{name: "payload not JSON", cluster: clusterA(t), token: hA + "." + b64u([]byte(`{"iss":`)) + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "token payload is not a valid JSON claims set"},
		{name: "empty", cluster: clusterA(t), token: "",
			wantCode: identity.CodeInvalidToken, wantMsg: "token is empty"},
		{name: "oversize", cluster: clusterA(t), token: hA + "." + strings.Repeat("A", MaxTokenSize) + "." + sA,
			wantCode: identity.CodeInvalidToken, wantMsg: "more than the 16384 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := fixtureNow
			if !tt.now.IsZero() {
				now = tt.now
			}
			v := NewVerifier(VerifierConfig{Now: func() time.Time { return now }, Logger: discardLogger()})
			got, err := v.Verify(context.Background(), tt.cluster, tt.token)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("claims (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify = %+v, want error", got)
			}
			if c := codeOf(t, err); c != tt.wantCode {
				t.Errorf("code = %v, want %v (%v)", c, tt.wantCode, err)
			}
			if !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", errMessage(err), tt.wantMsg)
			}
			assertNoToken(t, err, tt.token)
		})
	}
}

// assertNoToken fails when err mentions any sizable piece of token.
func assertNoToken(t *testing.T, err error, token string) {
	t.Helper()
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 16 && strings.Contains(err.Error(), part) {
			t.Errorf("error %q contains part of the token", err)
		}
	}
}

func split3(t *testing.T, tok string) (h, p, s string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("fixture has %d parts", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// flip changes one base64url character in the middle of s.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func reencodeClaims(t *testing.T, p, old, new string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), old, new)
	if s == string(b) {
		t.Fatalf("payload has no %q", old)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// TestVerifyClaims covers the claim checks with tokens we sign ourselves.
func TestVerifyClaims(t *testing.T) {
	now := time.Unix(1800000000, 0)
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	cluster := &identity.Cluster{Name: "own", Issuer: "https://own.test",
		Keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: jwks(t, key)}}

	tests := []struct {
		name     string
		edit     func(m map[string]any)
		wantCode identity.Code
		wantMsg  string
		check    func(t *testing.T, c *identity.TokenClaims)
	}{
		{name: "valid", check: func(t *testing.T, c *identity.TokenClaims) {
			want := &identity.TokenClaims{Issuer: "https://own.test", Subject: "system:serviceaccount:shop:checkout",
				Audience: []string{identity.Audience}, ID: "jti-1", IssuedAt: now, NotBefore: now, Expiry: now.Add(time.Hour),
				Namespace: "shop", ServiceAccountName: "checkout", ServiceAccountUID: "sa-uid",
				PodName: "checkout-1", PodUID: "pod-uid", NodeName: "node-1", NodeUID: "node-uid"}
			if diff := cmp.Diff(want, c); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		}},
		{name: "aud as a string", edit: func(m map[string]any) { m["aud"] = identity.Audience },
			check: func(t *testing.T, c *identity.TokenClaims) {
				if diff := cmp.Diff([]string{identity.Audience}, c.Audience); diff != "" {
					t.Error(diff)
				}
			}},
		{name: "aud among others", edit: func(m map[string]any) { m["aud"] = []string{"x", identity.Audience} }},
		{name: "no node claim", edit: func(m map[string]any) { delete(k8sClaim(m), "node") },
			check: func(t *testing.T, c *identity.TokenClaims) {
				if c.NodeName != "" || c.NodeUID != "" {
					t.Errorf("node = %q/%q, want none", c.NodeName, c.NodeUID)
				}
			}},
		{name: "no iat nor nbf", edit: func(m map[string]any) { delete(m, "iat"); delete(m, "nbf") }},
		{name: "fractional times", edit: func(m map[string]any) { m["exp"] = float64(now.Unix()) + 60.5 }},
		{name: "no aud", edit: func(m map[string]any) { delete(m, "aud") },
			wantCode: identity.CodeInvalidToken, wantMsg: `token audience [] does not include "pods.eks.amazonaws.com"`},
		{name: "aud wrong type", edit: func(m map[string]any) { m["aud"] = 7 },
			wantCode: identity.CodeInvalidToken, wantMsg: "token payload is not a valid JSON claims set"},
		{name: "no exp", edit: func(m map[string]any) { delete(m, "exp") },
			wantCode: identity.CodeInvalidToken, wantMsg: "token has no expiry"},
		{name: "exp not a number", edit: func(m map[string]any) { m["exp"] = "tomorrow" },
			wantCode: identity.CodeInvalidToken, wantMsg: "token payload is not a valid JSON claims set"},
		{name: "exp absurd", edit: func(m map[string]any) { m["exp"] = 1e300 },
			wantCode: identity.CodeInvalidToken, wantMsg: "token payload is not a valid JSON claims set"},
		{name: "iat in the future", edit: func(m map[string]any) { m["iat"] = now.Add(2 * time.Minute).Unix() },
			wantCode: identity.CodeInvalidToken, wantMsg: "token was issued in the future"},
		{name: "no issuer", edit: func(m map[string]any) { delete(m, "iss") },
			wantCode: identity.CodeInvalidToken, wantMsg: "token has no issuer"},
		{name: "subject not a service account", edit: func(m map[string]any) { m["sub"] = "system:node:node-1" },
			wantCode: identity.CodeInvalidToken, wantMsg: `token subject "system:node:node-1" is not a service account`},
		{name: "subject with extra colon", edit: func(m map[string]any) { m["sub"] = "system:serviceaccount:shop:checkout:x" },
			wantCode: identity.CodeInvalidToken, wantMsg: "is not a service account"},
		{name: "subject without name", edit: func(m map[string]any) { m["sub"] = "system:serviceaccount:shop:" },
			wantCode: identity.CodeInvalidToken, wantMsg: "is not a service account"},
		{name: "namespace disagrees", edit: func(m map[string]any) { k8sClaim(m)["namespace"] = "kube-system" },
			wantCode: identity.CodeInvalidToken, wantMsg: `token subject "system:serviceaccount:shop:checkout" disagrees with its kubernetes.io claim (namespace "kube-system", service account "checkout")`},
		{name: "service account disagrees", edit: func(m map[string]any) {
			k8sClaim(m)["serviceaccount"] = map[string]any{"name": "admin", "uid": "u"}
		}, wantCode: identity.CodeInvalidToken, wantMsg: `(namespace "shop", service account "admin")`},
		{name: "no service account", edit: func(m map[string]any) { delete(k8sClaim(m), "serviceaccount") },
			wantCode: identity.CodeInvalidToken, wantMsg: "disagrees with its kubernetes.io claim"},
		{name: "no kubernetes.io", edit: func(m map[string]any) { delete(m, "kubernetes.io") },
			wantCode: identity.CodeInvalidToken, wantMsg: "token has no kubernetes.io claim"},
		{name: "pod without uid", edit: func(m map[string]any) { k8sClaim(m)["pod"] = map[string]any{"name": "p"} },
			wantCode: identity.CodeInvalidToken, wantMsg: "token is not bound to a pod"},
		{name: "secret-bound, not pod-bound", edit: func(m map[string]any) {
			delete(k8sClaim(m), "pod")
			k8sClaim(m)["secret"] = map[string]any{"name": "s", "uid": "u"}
		}, wantCode: identity.CodeInvalidToken, wantMsg: "token is not bound to a pod"},
	}
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return now }, Logger: discardLogger()})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := podClaims(cluster.Issuer, now)
			if tt.edit != nil {
				tt.edit(claims)
			}
			got, err := v.Verify(context.Background(), cluster, key.sign(t, claims))
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tt.check != nil {
					tt.check(t, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify = %+v, want error", got)
			}
			if c := codeOf(t, err); c != tt.wantCode {
				t.Errorf("code = %v, want %v (%v)", c, tt.wantCode, err)
			}
			if !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", errMessage(err), tt.wantMsg)
			}
		})
	}
}

func TestLeeway(t *testing.T) {
	podA := fixture(t, "cluster-a/token-pod-bound.jwt")
	exp := time.Unix(1795566114, 0)
	tests := []struct {
		name    string
		leeway  time.Duration
		after   time.Duration // past exp
		expired bool
	}{
		{name: "default 60s, 59s late", after: 59 * time.Second},
		{name: "default 60s, 61s late", after: 61 * time.Second, expired: true},
		{name: "capped at 60s", leeway: 10 * time.Minute, after: 90 * time.Second, expired: true},
		{name: "smaller leeway", leeway: 5 * time.Second, after: 10 * time.Second, expired: true},
		{name: "negative is none", leeway: -1, after: time.Second, expired: true},
		{name: "negative is none, at exp", leeway: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(VerifierConfig{Leeway: tt.leeway, Now: func() time.Time { return exp.Add(tt.after) }, Logger: discardLogger()})
			_, err := v.Verify(context.Background(), clusterA(t), podA)
			if !tt.expired {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || codeOf(t, err) != identity.CodeExpiredToken {
				t.Fatalf("Verify error = %v, want ExpiredToken", err)
			}
		})
	}
}
