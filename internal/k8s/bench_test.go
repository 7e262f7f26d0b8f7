package k8s

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
)

// BenchmarkVerifyRS256 is the cost floor of an RS256 verification: one bare
// rsa.VerifyPKCS1v15 of the cluster-a token's signature, hashing included.
func BenchmarkVerifyRS256(b *testing.B) {
	tok := fixture(b, "cluster-a/token-pod-bound.jwt")
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	keys, err := ParseJWKS([]byte(fixture(b, "cluster-a/jwks.json")))
	if err != nil {
		b.Fatal(err)
	}
	pub := keys[0].Key.(*rsa.PublicKey)
	in := []byte(tok[:i])
	b.ReportAllocs()
	for b.Loop() {
		sum := sha256.Sum256(in)
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifierRS256 is a full Verify of the cluster-a token on a warm
// key cache: what a credential request pays.
func BenchmarkVerifierRS256(b *testing.B) {
	benchVerifier(b, "cluster-a/token-pod-bound.jwt", clusterA(b))
}

// BenchmarkVerifierES256 is the same for cluster-b's ES256 token.
func BenchmarkVerifierES256(b *testing.B) {
	benchVerifier(b, "cluster-b/token-pod-bound.jwt", clusterB(b))
}

func benchVerifier(b *testing.B, name string, c *identity.Cluster) {
	tok := fixture(b, name)
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return fixtureNow }, Logger: discardLogger()})
	ctx := context.Background()
	if _, err := v.Verify(ctx, c, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, c, tok); err != nil {
			b.Fatal(err)
		}
	}
}
