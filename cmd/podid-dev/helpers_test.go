package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
)

const fixtures = "../../testdata/kubernetes-1.37"

// fixedDeps pins the clock and makes every generated UUID jti.
func fixedDeps(now time.Time, jti string) deps {
	return deps{now: func() time.Time { return now }, newUUID: func() string { return jti }}
}

// execute runs the command tree with args and returns stdout and stderr.
func execute(t *testing.T, d deps, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(d)
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// verify checks token with podid's own verifier against dir's jwks.json.
func verify(t *testing.T, dir, issuer, token string, now time.Time) (*identity.TokenClaims, error) {
	t.Helper()
	jwks, err := os.ReadFile(filepath.Join(dir, jwksFile))
	if err != nil {
		t.Fatal(err)
	}
	v := k8s.NewVerifier(k8s.VerifierConfig{Now: func() time.Time { return now }})
	return v.Verify(context.Background(), &identity.Cluster{
		Name:   "dev",
		Issuer: issuer,
		Keys:   identity.KeySource{Kind: identity.KeysJWKS, JWKS: string(jwks)},
	}, token)
}

// segment returns the decoded i-th part of a compact JWS.
func segment(t *testing.T, token string, i int) []byte {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3: %q", len(parts), token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("segment %d: %v", i, err)
	}
	return b
}

func header(t *testing.T, token string) (alg, kid string) {
	t.Helper()
	var h struct{ Alg, Kid string }
	if err := json.Unmarshal(segment(t, token, 0), &h); err != nil {
		t.Fatal(err)
	}
	return h.Alg, h.Kid
}
