package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
)

const devIssuer = "https://dev.podid.test"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func baseArgs(dir string) []string {
	return []string{"token", "--dir", dir, "--issuer", devIssuer,
		"--namespace", "shop", "--service-account", "checkout", "--pod", "checkout-1"}
}

func TestTokenVerifiesWithPodidVerifier(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cluster")
			args := append(baseArgs(dir), "--alg", alg, "--node", "node-7", "--ttl", "1h",
				"--pod-uid", "117657C3-B52A-4B32-9EDC-C292F5CA4219",
				"--node-uid", "d1e8e010-d743-431f-84f3-ee7791d187ef",
				"--service-account-uid", "7a0b5668-9b80-4dbb-9267-1258ea0df4e7")
			out, _, err := execute(t, fixedDeps(t0, "ff7fda93-bc06-4f70-a6ed-0e506d2ece46"), args...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(out, "\n") != 1 {
				t.Fatalf("stdout should be the token alone on one line, got %q", out)
			}
			got, err := verify(t, dir, devIssuer, out, t0.Add(30*time.Minute))
			if err != nil {
				t.Fatalf("podid's verifier rejected the token: %v", err)
			}
			want := &identity.TokenClaims{
				Issuer:             devIssuer,
				Subject:            "system:serviceaccount:shop:checkout",
				Audience:           []string{identity.Audience},
				ID:                 "ff7fda93-bc06-4f70-a6ed-0e506d2ece46",
				IssuedAt:           t0,
				NotBefore:          t0,
				Expiry:             t0.Add(time.Hour),
				Namespace:          "shop",
				ServiceAccountName: "checkout",
				ServiceAccountUID:  "7a0b5668-9b80-4dbb-9267-1258ea0df4e7",
				PodName:            "checkout-1",
				PodUID:             "117657c3-b52a-4b32-9edc-c292f5ca4219",
				NodeName:           "node-7",
				NodeUID:            "d1e8e010-d743-431f-84f3-ee7791d187ef",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if gotAlg, _ := header(t, out); gotAlg != alg {
				t.Errorf("header alg = %q, want %q", gotAlg, alg)
			}
			// The token's life is --ttl: an hour and a minute of leeway later
			// it is expired.
			if _, err := verify(t, dir, devIssuer, out, t0.Add(time.Hour+2*time.Minute)); err == nil || identity.CodeOf(err) != identity.CodeExpiredToken {
				t.Errorf("after ttl: err = %v, want an expired-token error", err)
			}
			// And it is bound to its issuer.
			if _, err := verify(t, dir, "https://other.podid.test", out, t0); err == nil {
				t.Error("token verified for another issuer")
			}
		})
	}
}

func TestTokenRandomUIDs(t *testing.T) {
	dir := t.TempDir()
	out, _, err := execute(t, deps{now: func() time.Time { return t0 }, newUUID: newUUID}, baseArgs(dir)...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify(t, dir, devIssuer, out, t0)
	if err != nil {
		t.Fatal(err)
	}
	v4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for name, u := range map[string]string{"jti": got.ID, "pod": got.PodUID, "node": got.NodeUID, "serviceaccount": got.ServiceAccountUID} {
		if !v4.MatchString(u) {
			t.Errorf("%s uid %q is not a v4 UUID", name, u)
		}
		if seen[u] {
			t.Errorf("%s uid %q repeats another uid", name, u)
		}
		seen[u] = true
	}
	want := &identity.TokenClaims{
		Issuer: devIssuer, Subject: "system:serviceaccount:shop:checkout", Audience: []string{identity.Audience},
		IssuedAt: t0, NotBefore: t0, Expiry: t0.Add(24 * time.Hour),
		Namespace: "shop", ServiceAccountName: "checkout", PodName: "checkout-1", NodeName: "node-1",
	}
	ignore := cmpopts.IgnoreFields(identity.TokenClaims{}, "ID", "PodUID", "NodeUID", "ServiceAccountUID")
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("claims with defaults (-want +got):\n%s", diff)
	}
}

// TestTokenMatchesKubeAPIServer mints the fixture tokens' claims again and
// requires the very bytes kube-apiserver v1.37 wrote, and a header of the
// same shape.
func TestTokenMatchesKubeAPIServer(t *testing.T) {
	var fixtureClaims map[string]struct {
		Header map[string]string `json:"header"`
		Claims tokenClaims       `json:"claims"`
	}
	raw, err := os.ReadFile(filepath.Join(fixtures, "claims.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &fixtureClaims); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cluster-a/token-pod-bound.jwt", "cluster-b/token-pod-bound.jwt"} {
		t.Run(name, func(t *testing.T) {
			fx := fixtureClaims[name]
			c := fx.Claims
			real, err := os.ReadFile(filepath.Join(fixtures, name))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			k := c.Kubernetes
			out, _, err := execute(t, fixedDeps(time.Unix(c.Iat, 0), c.Jti), "token", "--dir", dir, "--issuer", c.Iss,
				"--namespace", k.Namespace, "--service-account", k.ServiceAccount.Name, "--pod", k.Pod.Name, "--node", k.Node.Name,
				"--pod-uid", k.Pod.UID, "--node-uid", k.Node.UID, "--service-account-uid", k.ServiceAccount.UID,
				"--ttl", strconv.FormatInt(c.Exp-c.Iat, 10)+"s", "--alg", fx.Header["alg"])
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(segment(t, string(real), 1)), string(segment(t, out, 1))); diff != "" {
				t.Errorf("payload differs from kube-apiserver's (-real +ours):\n%s", diff)
			}
			_, kid := header(t, out)
			wantHeader := `{"alg":"` + fx.Header["alg"] + `","kid":"` + kid + `"}`
			if got := string(segment(t, out, 0)); got != wantHeader {
				t.Errorf("header = %s, want %s", got, wantHeader)
			}
			if got, want := len(segment(t, out, 2)), len(segment(t, string(real), 2)); got != want {
				t.Errorf("signature is %d bytes, kube-apiserver's %d", got, want)
			}
		})
	}
}

// TestJWKSMatchesKubeAPIServer writes the fixture clusters' public keys
// and requires the bytes /openid/v1/jwks served, kid included.
func TestJWKSMatchesKubeAPIServer(t *testing.T) {
	for _, cluster := range []string{"cluster-a", "cluster-b"} {
		t.Run(cluster, func(t *testing.T) {
			real, err := os.ReadFile(filepath.Join(fixtures, cluster, "jwks.json"))
			if err != nil {
				t.Fatal(err)
			}
			keys, err := k8s.ParseJWKS(real)
			if err != nil || len(keys) != 1 {
				t.Fatalf("fixture: %d keys, %v", len(keys), err)
			}
			got, err := marshalJWKS(keys[0].Key)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.TrimSpace(string(real)), string(got)); diff != "" {
				t.Errorf("jwks (-kube-apiserver +ours):\n%s", diff)
			}
		})
	}
}

func TestTokenReusesKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "cluster")
	d := fixedDeps(t0, "ff7fda93-bc06-4f70-a6ed-0e506d2ece46")
	first, stderr1, err := execute(t, d, append(baseArgs(dir), "--alg", "ES256")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr1, "new ES256 signing key") {
		t.Errorf("first run stderr = %q, want a note about the new key", stderr1)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, signingKeyFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", path, got, want)
		}
	}
	jwks1, _ := os.ReadFile(filepath.Join(dir, jwksFile))

	// No --alg: the existing key decides.
	second, stderr2, err := execute(t, d, baseArgs(dir)...)
	if err != nil {
		t.Fatal(err)
	}
	if stderr2 != "" {
		t.Errorf("second run stderr = %q, want nothing", stderr2)
	}
	alg1, kid1 := header(t, first)
	alg2, kid2 := header(t, second)
	if kid1 != kid2 || alg1 != alg2 || alg2 != "ES256" {
		t.Errorf("second run signed with %s/%s, first with %s/%s; the key was not reused", alg2, kid2, alg1, kid1)
	}
	jwks2, _ := os.ReadFile(filepath.Join(dir, jwksFile))
	if string(jwks1) != string(jwks2) {
		t.Errorf("jwks changed between runs:\n%s\n%s", jwks1, jwks2)
	}
	// Both tokens verify with the one JWKS.
	for i, tok := range []string{first, second} {
		if _, err := verify(t, dir, devIssuer, tok, t0); err != nil {
			t.Errorf("token %d: %v", i+1, err)
		}
	}

	_, _, err = execute(t, d, append(baseArgs(dir), "--alg", "RS256")...)
	if err == nil || !strings.Contains(err.Error(), "signs ES256, not RS256") {
		t.Errorf("asking an ES256 key for RS256: err = %v", err)
	}
}

// A kube-apiserver key (--service-account-signing-key-file, PKCS #1) can
// be dropped into --dir.
func TestTokenUsesExistingKubeKey(t *testing.T) {
	dir := t.TempDir()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	if err := os.WriteFile(filepath.Join(dir, signingKeyFile), pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := execute(t, fixedDeps(t0, "ff7fda93-bc06-4f70-a6ed-0e506d2ece46"), baseArgs(dir)...)
	if err != nil {
		t.Fatal(err)
	}
	wantKid, err := keyID(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if alg, kid := header(t, out); alg != "RS256" || kid != wantKid {
		t.Errorf("header = %s/%s, want RS256/%s", alg, kid, wantKid)
	}
	if _, err := verify(t, dir, devIssuer, out, t0); err != nil {
		t.Error(err)
	}
}

func TestTokenBadKeyFile(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, _ := x509.MarshalPKCS8PrivateKey(weak)
	for _, tc := range []struct {
		name, pem, want string
	}{
		{"not PEM", "hello", "no PEM private key found"},
		{"public key only", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "no PEM private key found"},
		{"garbage key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "parsing PRIVATE KEY"},
		{"weak RSA", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: weakDER})), "RSA key has 1024 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, signingKeyFile), []byte(tc.pem), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := execute(t, fixedDeps(t0, "x"), baseArgs(dir)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), signingKeyFile) {
				t.Errorf("err = %v, want one naming %s and saying %q", err, signingKeyFile, tc.want)
			}
		})
	}
}

func TestTokenBadFlags(t *testing.T) {
	set := func(flag, value string) func([]string) []string {
		return func(args []string) []string {
			for i := range args {
				if args[i] == "--"+flag {
					args[i+1] = value
					return args
				}
			}
			return append(args, "--"+flag, value)
		}
	}
	for _, tc := range []struct {
		name  string
		edit  func([]string) []string
		wants []string
	}{
		{"no flags", func([]string) []string { return []string{"token"} }, []string{
			"--dir is required", "--issuer is required", "--namespace is required", "--service-account is required", "--pod is required"}},
		{"http issuer", set("issuer", "http://dev.podid.test"), []string{`invalid --issuer "http://dev.podid.test": must be an https URL`}},
		{"issuer with query", set("issuer", "https://dev.podid.test/?a=b"), []string{"invalid --issuer"}},
		{"issuer not a URL", set("issuer", "dev"), []string{"invalid --issuer"}},
		{"upper-case namespace", set("namespace", "Shop"), []string{`invalid --namespace "Shop": a lowercase RFC 1123 label`}},
		{"dotted namespace", set("namespace", "shop.eu"), []string{`invalid --namespace "shop.eu"`}},
		{"long namespace", set("namespace", strings.Repeat("a", 64)), []string{"must be no more than 63 characters"}},
		{"service account with colon", set("service-account", "a:b"), []string{`invalid --service-account "a:b": a lowercase RFC 1123 subdomain`}},
		{"pod ending in dash", set("pod", "checkout-"), []string{`invalid --pod "checkout-"`}},
		{"long pod", set("pod", strings.Repeat("a", 254)), []string{"must be no more than 253 characters"}},
		{"empty node", set("node", ""), []string{"--node is required"}},
		{"node with underscore", set("node", "node_1"), []string{`invalid --node "node_1"`}},
		{"bad pod uid", set("pod-uid", "pod-1"), []string{`invalid --pod-uid "pod-1": must be a UUID`}},
		{"short ttl", set("ttl", "5m"), []string{"invalid --ttl 5m0s: must be at least 10m0s"}},
		{"fractional ttl", set("ttl", "10m500ms"), []string{"must be whole seconds"}},
		{"huge ttl", set("ttl", "2000000h"), []string{"less than 2^32 seconds"}},
		{"bad alg", set("alg", "HS256"), []string{`invalid --alg "HS256": use RS256 or ES256`}},
		{"two mistakes", func(a []string) []string { return set("pod", "P")(set("namespace", "N")(a)) }, []string{`--namespace "N"`, `--pod "P"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cluster")
			out, _, err := execute(t, fixedDeps(t0, "x"), tc.edit(baseArgs(dir))...)
			if err == nil {
				t.Fatalf("no error; stdout %q", out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("--dir was created despite invalid flags (stat: %v)", err)
			}
		})
	}
}
