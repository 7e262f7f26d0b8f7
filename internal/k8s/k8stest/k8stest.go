// Package k8stest mints service-account tokens shaped exactly like the
// projected tokens kube-apiserver issues, for tests that need tokens valid
// in real time (the recorded fixtures in testdata/ are long expired).
package k8stest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"time"
)

// Issuer is a cluster's service-account token signer.
type Issuer struct {
	// URL is the issuer, the tokens' iss claim.
	URL   string
	Alg   string
	KeyID string
	key   crypto.Signer
}

// NewIssuer makes a fresh RS256 (2048-bit) or ES256 signing key.
func NewIssuer(url, alg string) (*Issuer, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("k8stest: unsupported alg %q", alg)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	// kube-apiserver's kid: base64url of the SHA-256 of the DER public key.
	return &Issuer{URL: url, Alg: alg, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), key: key}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// PublicKey returns the issuer's public key.
func (i *Issuer) PublicKey() crypto.PublicKey { return i.key.Public() }

// JWKS returns the public key set as /openid/v1/jwks serves it.
func (i *Issuer) JWKS() string {
	k := map[string]string{"use": "sig", "kid": i.KeyID, "alg": i.Alg}
	switch pub := i.key.Public().(type) {
	case *rsa.PublicKey:
		k["kty"], k["n"], k["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		ecdh, _ := pub.ECDH()
		raw := ecdh.Bytes() // 0x04 || X || Y
		k["kty"], k["crv"], k["x"], k["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
	}
	out, _ := json.Marshal(map[string]any{"keys": []any{k}})
	return string(out)
}

// Pod names the pod a token is bound to. Empty UIDs get fixed defaults;
// an empty Audience means pods.eks.amazonaws.com.
type Pod struct {
	Namespace, ServiceAccount, ServiceAccountUID string
	Name, UID                                    string
	NodeName, NodeUID                            string
	Audience                                     []string
}

// Token mints a token for p, issued at now and valid for ttl.
func (i *Issuer) Token(p Pod, now time.Time, ttl time.Duration) (string, error) {
	return i.Sign(i.Claims(p, now, ttl))
}

// Claims returns the claims Token would sign, for tests that alter them.
func (i *Issuer) Claims(p Pod, now time.Time, ttl time.Duration) map[string]any {
	or := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	aud := p.Audience
	if len(aud) == 0 {
		aud = []string{"pods.eks.amazonaws.com"}
	}
	k8s := map[string]any{
		"namespace":      p.Namespace,
		"serviceaccount": map[string]string{"name": p.ServiceAccount, "uid": or(p.ServiceAccountUID, "7a0b5668-9b80-4dbb-9267-1258ea0df4e7")},
		"pod":            map[string]string{"name": p.Name, "uid": or(p.UID, "117657c3-b52a-4b32-9edc-c292f5ca4219")},
	}
	if p.NodeName != "" {
		k8s["node"] = map[string]string{"name": p.NodeName, "uid": or(p.NodeUID, "d1e8e010-d743-431f-84f3-ee7791d187ef")}
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := map[string]any{
		"aud":           aud,
		"exp":           now.Add(ttl).Unix(),
		"iat":           now.Unix(),
		"iss":           i.URL,
		"jti":           fmt.Sprintf("%x-%x-%x-%x-%x", jti[0:4], jti[4:6], jti[6:8], jti[8:10], jti[10:]),
		"kubernetes.io": k8s,
		"nbf":           now.Unix(),
		"sub":           "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
	}
	return claims
}

// Sign signs any claims with the issuer's key, header {alg, kid}.
func (i *Issuer) Sign(claims map[string]any) (string, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": i.Alg, "kid": i.KeyID})
	body, _ := json.Marshal(claims)
	input := b64(hdr) + "." + b64(body)
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch key := i.key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		if r, s, err = ecdsa.Sign(rand.Reader, key, sum[:]); err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	}
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}
