package k8s

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// minRSABits is the smallest RSA modulus we accept. Kubernetes generates
// 2048-bit keys; anything smaller can be factored by a determined attacker.
const minRSABits = 2048

// PublicKey is one service-account signing key of a cluster.
type PublicKey struct {
	// KeyID is the JWKS kid; empty for PEM keys, which match any kid.
	KeyID string
	// Alg is the JWKS alg, empty when the key did not restrict it.
	Alg string
	// Key is *rsa.PublicKey or an *ecdsa.PublicKey on P-256.
	Key any
}

// Supports reports whether the key can verify tokens signed with alg.
func (k PublicKey) Supports(alg string) bool {
	if k.Alg != "" && k.Alg != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return alg == AlgRS256
	case *ecdsa.PublicKey:
		return alg == AlgES256 && key.Curve == elliptic.P256()
	}
	return false
}

type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// ParseJWKS parses a JWKS document and returns its usable signing keys: RSA
// (RS256) and EC P-256 (ES256). Keys for another use, of another type or
// malformed are skipped; it is an error when none is left.
func ParseJWKS(data []byte) ([]PublicKey, error) {
	keys, _, err := parseJWKS(data)
	return keys, err
}

// parseJWKS also returns why keys were skipped, so the verifier can log it.
func parseJWKS(data []byte) (keys []PublicKey, skipped []string, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if len(doc.Keys) == 0 {
		return nil, nil, errors.New(`JWKS has no "keys"`)
	}
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: not a JSON object", i))
			continue
		}
		k, err := j.publicKey()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, truncate(j.Kid, 64), err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("JWKS has no usable RS256 or ES256 signing key (%s)", strings.Join(skipped, "; "))
	}
	return keys, skipped, nil
}

func (j *jwk) publicKey() (PublicKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return PublicKey{}, fmt.Errorf("use %q is not sig", truncate(j.Use, 16))
	}
	k := PublicKey{KeyID: j.Kid, Alg: j.Alg}
	switch j.Kty {
	case "RSA":
		if j.Alg != "" && j.Alg != AlgRS256 {
			return PublicKey{}, fmt.Errorf("alg %q is not supported", truncate(j.Alg, 16))
		}
		n, err := b64.DecodeString(j.N)
		if err != nil || len(n) == 0 {
			return PublicKey{}, errors.New("n is not base64url")
		}
		e, err := b64.DecodeString(j.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return PublicKey{}, errors.New("e is not a base64url integer of at most 4 bytes")
		}
		var ev uint64
		for _, c := range e {
			ev = ev<<8 | uint64(c)
		}
		if ev > math.MaxInt32 {
			return PublicKey{}, errors.New("e is too large")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev)}
		if err := checkRSA(pub); err != nil {
			return PublicKey{}, err
		}
		k.Key = pub
	case "EC":
		if j.Alg != "" && j.Alg != AlgES256 {
			return PublicKey{}, fmt.Errorf("alg %q is not supported", truncate(j.Alg, 16))
		}
		if j.Crv != "P-256" {
			return PublicKey{}, fmt.Errorf("curve %q is not supported; want P-256", truncate(j.Crv, 16))
		}
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return PublicKey{}, errors.New("x and y must be 32-byte base64url coordinates")
		}
		// ParseUncompressedPublicKey rejects points not on the curve, which
		// invalid-curve attacks rely on.
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return PublicKey{}, fmt.Errorf("not a P-256 point: %v", err)
		}
		k.Key = pub
	default:
		return PublicKey{}, fmt.Errorf("kty %q is not supported", truncate(j.Kty, 16))
	}
	return k, nil
}

func checkRSA(pub *rsa.PublicKey) error {
	if pub.N.BitLen() < minRSABits {
		return fmt.Errorf("RSA key is %d bits, fewer than %d", pub.N.BitLen(), minRSABits)
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return fmt.Errorf("RSA exponent %d is not valid", pub.E)
	}
	return nil
}

// ParsePEMKeys parses one or more PEM public keys: PKIX "PUBLIC KEY" (RSA or
// EC P-256) and PKCS #1 "RSA PUBLIC KEY". Any other block is an error, so a
// private key pasted by mistake is refused rather than silently used.
func ParsePEMKeys(data []byte) ([]PublicKey, error) {
	var keys []PublicKey
	rest := data
	for i := 0; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(b.Bytes)
		default:
			return nil, fmt.Errorf("PEM block %d is a %q; want PUBLIC KEY or RSA PUBLIC KEY", i, truncate(b.Type, 32))
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		switch k := key.(type) {
		case *rsa.PublicKey:
			if err := checkRSA(k); err != nil {
				return nil, fmt.Errorf("PEM block %d: %w", i, err)
			}
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("PEM block %d: EC curve %s is not supported; want P-256", i, k.Curve.Params().Name)
			}
		default:
			return nil, fmt.Errorf("PEM block %d: %T keys are not supported; want RSA or EC P-256", i, key)
		}
		keys = append(keys, PublicKey{Key: key})
	}
	if len(bytes.TrimSpace(rest)) > 0 && len(keys) > 0 {
		return nil, fmt.Errorf("unexpected data after PEM block %d", len(keys)-1)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return keys, nil
}
