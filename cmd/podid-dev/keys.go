package main

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
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
)

// Signing algorithms kube-apiserver signs service-account tokens with.
const (
	algRS256 = "RS256"
	algES256 = "ES256"
)

const (
	signingKeyFile = "signing-key.pem"
	jwksFile       = "jwks.json"
	rsaBits        = 2048
)

// signingKey is a service-account signing key and the algorithm it signs
// with.
type signingKey struct {
	alg string
	key crypto.Signer
	kid string
}

// loadOrCreateKey reuses dir's signing key, so tokens minted on different
// runs verify with the one JWKS, or makes one for alg ("" means RS256).
// created reports whether the key is new.
func loadOrCreateKey(dir, alg string) (k *signingKey, created bool, err error) {
	path := filepath.Join(dir, signingKeyFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, err := parseSigningKey(raw)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		if alg != "" && alg != k.alg {
			return nil, false, fmt.Errorf("%s signs %s, not %s: drop --alg, or use another --dir for a %s key", path, k.alg, alg, alg)
		}
		return k, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	}

	if alg == "" {
		alg = algRS256
	}
	var priv crypto.Signer
	switch alg {
	case algRS256:
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case algES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, false, fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, false, err
	}
	// O_EXCL: two runs racing on a fresh dir must not leave tokens signed by
	// a key that the other one overwrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, false, err
	}
	k, err = newSigningKey(priv)
	return k, true, err
}

// parseSigningKey accepts the PEM private keys kube-apiserver accepts for
// --service-account-signing-key-file: PKCS #8, PKCS #1 RSA and SEC 1 EC.
func parseSigningKey(raw []byte) (*signingKey, error) {
	for {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			return nil, errors.New("no PEM private key found (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue // e.g. EC PARAMETERS before the key, as openssl writes
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return newSigningKey(s)
	}
}

func newSigningKey(s crypto.Signer) (*signingKey, error) {
	k := &signingKey{key: s}
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < rsaBits {
			return nil, fmt.Errorf("RSA key has %d bits; at least %d are required", pub.N.BitLen(), rsaBits)
		}
		k.alg = algRS256
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC key is on %s; only P-256 (ES256) is supported", pub.Curve.Params().Name)
		}
		k.alg = algES256
	default:
		return nil, fmt.Errorf("unsupported key type %T: use RSA or EC P-256", pub)
	}
	kid, err := keyID(s.Public())
	if err != nil {
		return nil, err
	}
	k.kid = kid
	return k, nil
}

// keyID is kube-apiserver's key ID: the unpadded base64url SHA-256 of the
// PKIX (DER) public key.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// jwk is one key of the JWKS, fields in the order kube-apiserver's
// /openid/v1/jwks writes them.
type jwk struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// marshalJWKS returns the JWKS document kube-apiserver serves for pub.
func marshalJWKS(pub crypto.PublicKey) ([]byte, error) {
	kid, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	k := jwk{Use: "sig", Kid: kid}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		k.Kty, k.Alg = "RSA", algRS256
		k.N = b64(pub.N.Bytes())
		k.E = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, errors.New("only P-256 EC keys are supported")
		}
		// RFC 7518 6.2.1.2: coordinates are the full field size, padded,
		// which the uncompressed point 0x04||X||Y already is.
		raw, err := pub.Bytes()
		if err != nil {
			return nil, err
		}
		k.Kty, k.Crv, k.Alg = "EC", "P-256", algES256
		k.X, k.Y = b64(raw[1:33]), b64(raw[33:65])
	default:
		return nil, fmt.Errorf("unsupported key type %T", pub)
	}
	return json.Marshal(struct {
		Keys []jwk `json:"keys"`
	}{[]jwk{k}})
}

// writeFileAtomic replaces path, so a podid server reading the JWKS file
// never sees half of it.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// sign returns the JWS signature of input.
func (k *signingKey) sign(input string) ([]byte, error) {
	sum := sha256.Sum256([]byte(input))
	switch key := k.key.(type) {
	case *ecdsa.PrivateKey:
		// JWS wants the raw r||s form (RFC 7518 3.4), not ASN.1.
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	default:
		return k.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
}
