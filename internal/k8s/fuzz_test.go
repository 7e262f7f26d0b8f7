package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
)

// FuzzVerify feeds arbitrary tokens to a warm verifier for cluster-a. It
// must never panic, must only ever answer InvalidToken or ExpiredToken (the
// keys are inline, so nothing else can go wrong), must never quote the
// token back, and whatever it accepts must be a complete pod identity.
func FuzzVerify(f *testing.F) {
	for _, name := range []string{
		"cluster-a/token-pod-bound.jwt",
		"cluster-a/token-not-pod-bound.jwt",
		"cluster-a/token-wrong-audience.jwt",
		"cluster-b/token-pod-bound.jwt",
	} {
		tok := fixture(f, name)
		f.Add(tok)
		h, p, _ := strings.Cut(tok, ".")
		f.Add(h + "." + p + ".")
		f.Add(tok[:len(tok)-1])
	}
	f.Add("")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOjF9.AA")

	clusters := []*identity.Cluster{clusterA(f), clusterB(f)}
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return fixtureNow }, Logger: discardLogger()})
	f.Fuzz(func(t *testing.T, token string) {
		for _, c := range clusters {
			got, err := v.Verify(context.Background(), c, token)
			if err != nil {
				var ie *identity.Error
				if !errors.As(err, &ie) || (ie.Code != identity.CodeInvalidToken && ie.Code != identity.CodeExpiredToken) {
					t.Fatalf("Verify error %v (%T) is not an InvalidToken or ExpiredToken *identity.Error", err, err)
				}
				if got != nil {
					t.Fatal("Verify returned claims with an error")
				}
				for _, part := range strings.Split(token, ".") {
					if len(part) >= 32 && strings.Contains(err.Error(), part) {
						t.Fatalf("error %q quotes the token", err)
					}
				}
				continue
			}
			if got.Issuer != c.Issuer || got.PodName == "" || got.PodUID == "" || got.Namespace == "" ||
				got.ServiceAccountName == "" || got.Subject != "system:serviceaccount:"+got.Namespace+":"+got.ServiceAccountName {
				t.Fatalf("Verify accepted incomplete claims %+v", got)
			}
			if fixtureNow.After(got.Expiry.Add(DefaultLeeway)) {
				t.Fatalf("Verify accepted an expired token: %+v", got)
			}
		}
	})
}

// FuzzParseJWKS checks the JWKS parser never panics and only returns keys
// it can use.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(fixture(f, "cluster-a/jwks.json")))
	f.Add([]byte(fixture(f, "cluster-b/jwks.json")))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"},{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if !k.Supports(AlgRS256) && !k.Supports(AlgES256) {
				t.Fatalf("returned unusable key %+v", k)
			}
		}
	})
}

// FuzzParsePEMKeys checks the PEM parser never panics.
func FuzzParsePEMKeys(f *testing.F) {
	f.Add([]byte(pemPKIX(f, rsaKey(f, 0).Public())))
	f.Add([]byte(pemPKIX(f, ecKey(f).Public())))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParsePEMKeys(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if !k.Supports(AlgRS256) && !k.Supports(AlgES256) {
				t.Fatalf("returned unusable key %+v", k)
			}
		}
	})
}
