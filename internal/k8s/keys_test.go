package k8s

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParseJWKS(t *testing.T) {
	rk := testKey{kid: "r", priv: rsaKey(t, 0)}
	ek := testKey{kid: "e", priv: ecKey(t)}
	good := func(k testKey) string {
		return strings.TrimSuffix(strings.TrimPrefix(jwks(t, k), `{"keys":[`), `]}`)
	}
	offCurve := ek.jwk()
	offCurve["y"] = offCurve["x"]
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		doc      string
		wantKids []string
		wantErr  string
	}{
		{name: "cluster-a", doc: fixture(t, "cluster-a/jwks.json"), wantKids: []string{"NIHXVsrFxPLWTH5qwj6Dnlf-QTbuCkjTH8PsxMXulHM"}},
		{name: "cluster-b", doc: fixture(t, "cluster-b/jwks.json"), wantKids: []string{"0uYKq8JMOTSxJi4IUlghd_9NI_hpCv-kleNYEIqLKPc"}},
		{name: "RSA and EC", doc: jwks(t, rk, ek), wantKids: []string{"r", "e"}},
		{name: "enc keys and unknown kty skipped",
			doc:      `{"keys":[{"kty":"RSA","use":"enc","kid":"x","n":"AQAB","e":"AQAB"},{"kty":"oct","kid":"h","k":"c2VjcmV0"},{"kty":"OKP","crv":"Ed25519","x":"AA"},` + good(ek) + `]}`,
			wantKids: []string{"e"}},
		{name: "malformed key skipped", doc: `{"keys":[{"kty":"RSA","kid":"bad","n":"!!","e":"AQAB"},7,` + good(rk) + `]}`, wantKids: []string{"r"}},
		{name: "no use is fine", doc: `{"keys":[{"kty":"EC","crv":"P-256","x":"` + ek.jwk()["x"].(string) + `","y":"` + ek.jwk()["y"].(string) + `"}]}`, wantKids: []string{""}},
		{name: "none usable", doc: `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`, wantErr: `JWKS has no usable RS256 or ES256 signing key (key 0 (kid "h"): kty "oct" is not supported)`},
		{name: "enc only", doc: `{"keys":[{"kty":"RSA","use":"enc","kid":"x","n":"AQAB","e":"AQAB"}]}`, wantErr: `use "enc" is not sig`},
		{name: "P-384", doc: `{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}`, wantErr: `curve "P-384" is not supported`},
		{name: "off-curve point", doc: jwksOf(t, offCurve), wantErr: "not a P-256 point"},
		{name: "small RSA", doc: jwks(t, testKey{kid: "s", priv: small}), wantErr: "RSA key is 1024 bits, fewer than 2048"},
		{name: "even exponent", doc: `{"keys":[{"kty":"RSA","n":"` + rk.jwk()["n"].(string) + `","e":"AAAC"}]}`, wantErr: "RSA exponent 2 is not valid"},
		{name: "huge exponent", doc: `{"keys":[{"kty":"RSA","n":"` + rk.jwk()["n"].(string) + `","e":"gAAAAQ"}]}`, wantErr: "e is too large"},
		{name: "RSA with ES256 alg", doc: `{"keys":[{"kty":"RSA","alg":"ES256","n":"` + rk.jwk()["n"].(string) + `","e":"AQAB"}]}`, wantErr: `alg "ES256" is not supported`},
		{name: "RS512", doc: `{"keys":[{"kty":"RSA","alg":"RS512","n":"` + rk.jwk()["n"].(string) + `","e":"AQAB"}]}`, wantErr: `alg "RS512" is not supported`},
		{name: "no keys", doc: `{"keys":[]}`, wantErr: `JWKS has no "keys"`},
		{name: "not JSON", doc: `<html>`, wantErr: "JWKS is not valid JSON"},
		{name: "empty", doc: ``, wantErr: "JWKS is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseJWKS([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseJWKS error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseJWKS: %v", err)
			}
			var kids []string
			for _, k := range keys {
				kids = append(kids, k.KeyID)
			}
			if strings.Join(kids, ",") != strings.Join(tt.wantKids, ",") {
				t.Errorf("kids = %q, want %q", kids, tt.wantKids)
			}
		})
	}
}

func jwksOf(t *testing.T, keys ...map[string]any) string {
	t.Helper()
	return `{"keys":[` + strings.Join(mapJSON(t, keys), ",") + `]}`
}

func mapJSON(t *testing.T, l []map[string]any) []string {
	var out []string
	for _, m := range l {
		out = append(out, strings.TrimSpace(string(mustJSON(t, m))))
	}
	return out
}

func TestParsePEMKeys(t *testing.T) {
	rk := rsaKey(t, 0)
	ek := ecKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rk.PublicKey)}))
	privDER, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	priv := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))

	tests := []struct {
		name    string
		pem     string
		want    int
		wantErr string
	}{
		{name: "PKIX RSA", pem: pemPKIX(t, rk.Public()), want: 1},
		{name: "PKCS1 RSA", pem: pkcs1, want: 1},
		{name: "PKIX EC", pem: pemPKIX(t, ek.Public()), want: 1},
		{name: "several, with text around", pem: "# cluster keys\n" + pemPKIX(t, rk.Public()) + "\n" + pemPKIX(t, ek.Public()) + "\n" + pkcs1 + "\n", want: 3},
		{name: "private key refused", pem: priv, wantErr: `PEM block 0 is a "PRIVATE KEY"`},
		{name: "P-384 refused", pem: pemPKIX(t, p384.Public()), wantErr: "EC curve P-384 is not supported"},
		{name: "garbage DER", pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nope")})), wantErr: "PEM block 0"},
		{name: "trailing junk", pem: pemPKIX(t, rk.Public()) + "-----BEGIN PUBLIC KEY-----\nAAA", wantErr: "unexpected data after PEM block 0"},
		{name: "no PEM", pem: "hello", wantErr: "no PEM public key found"},
		{name: "empty", pem: "", wantErr: "no PEM public key found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParsePEMKeys([]byte(tt.pem))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePEMKeys error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePEMKeys: %v", err)
			}
			if len(keys) != tt.want {
				t.Errorf("got %d keys, want %d", len(keys), tt.want)
			}
			for _, k := range keys {
				if k.KeyID != "" {
					t.Errorf("PEM key has kid %q", k.KeyID)
				}
			}
		})
	}
}
