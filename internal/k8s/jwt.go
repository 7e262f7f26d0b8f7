package k8s

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/podid/podid/internal/identity"
)

// MaxTokenSize bounds the size of a token we are willing to parse. Real
// projected tokens are about 1.2 KiB; the bound keeps a hostile caller from
// making us base64-decode and JSON-parse megabytes.
const MaxTokenSize = 16 << 10

// Signing algorithms a Kubernetes API server uses for service-account tokens.
const (
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
)

// b64 is strict so a signature cannot be re-encoded with different trailing
// bits and still decode to the same bytes.
var b64 = base64.RawURLEncoding.Strict()

// Token is a parsed compact JWS whose signature has not been checked yet.
type Token struct {
	// Alg is the header's algorithm, always AlgRS256 or AlgES256.
	Alg string
	// KeyID is the header's kid; empty when the header has none.
	KeyID string
	// Claims is the decoded payload.
	Claims Claims

	signingInput string // header "." payload, exactly as received
	signature    []byte
}

// Claims is the payload of a projected service-account token.
type Claims struct {
	Issuer     string           `json:"iss"`
	Subject    string           `json:"sub"`
	Audience   Audience         `json:"aud"`
	Expiry     *NumericDate     `json:"exp"`
	NotBefore  *NumericDate     `json:"nbf"`
	IssuedAt   *NumericDate     `json:"iat"`
	ID         string           `json:"jti"`
	Kubernetes *KubernetesClaim `json:"kubernetes.io"`
}

// KubernetesClaim is the private "kubernetes.io" claim the API server adds:
// the service account and the objects the token is bound to.
type KubernetesClaim struct {
	Namespace      string     `json:"namespace"`
	ServiceAccount *ObjectRef `json:"serviceaccount"`
	Pod            *ObjectRef `json:"pod"`
	Node           *ObjectRef `json:"node"`
}

// ObjectRef names a Kubernetes object in the kubernetes.io claim.
type ObjectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Audience is the aud claim, which RFC 7519 allows as a string or an array.
type Audience []string

// UnmarshalJSON accepts a single string, an array of strings or null.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = l
	return nil
}

// maxNumericDate is the end of year 9999; later times are nonsense and would
// overflow time arithmetic.
const maxNumericDate = 253402300799

// NumericDate is a JWT time: seconds since the Unix epoch. Fractions are
// allowed by RFC 7519 and truncated.
type NumericDate int64

// UnmarshalJSON accepts a JSON number between 0 and the end of year 9999.
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return fmt.Errorf("time %.40s is not a number of seconds between 0 and %d", b, int64(maxNumericDate))
	}
	*d = NumericDate(f)
	return nil
}

// Time returns d as a UTC time; a nil d is the zero time.
func (d *NumericDate) Time() time.Time {
	if d == nil {
		return time.Time{}
	}
	return time.Unix(int64(*d), 0).UTC()
}

type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

func invalid(format string, args ...any) *identity.Error {
	return identity.Errorf(identity.CodeInvalidToken, format, args...)
}

// ParseToken splits and decodes a compact JWS and checks everything that
// does not need a key: its size, shape, algorithm and payload syntax. Errors
// are *identity.Error with CodeInvalidToken and never quote the token.
func ParseToken(token string) (*Token, error) {
	if len(token) > MaxTokenSize {
		return nil, invalid("token is %d bytes, more than the %d allowed", len(token), MaxTokenSize)
	}
	if token == "" {
		return nil, invalid("token is empty")
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return nil, invalid("token is not a JWT: want 3 dot-separated parts, got %d", strings.Count(token, ".")+1)
	}

	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, invalid("token header is not base64url")
	}
	var hdr header
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, &identity.Error{Code: identity.CodeInvalidToken, Message: "token header is not a JSON object", Err: err}
	}
	switch hdr.Alg {
	case AlgRS256, AlgES256:
	case "":
		return nil, invalid("token header has no alg")
	default:
		return nil, invalid("token algorithm %q is not allowed; want RS256 or ES256", truncate(hdr.Alg, 16))
	}
	// RFC 7515 §4.1.11: extensions we do not understand must be rejected.
	if len(hdr.Crit) > 0 && string(hdr.Crit) != "null" {
		return nil, invalid("token header has crit extensions, which are not supported")
	}

	sig, err := b64.DecodeString(s)
	if err != nil {
		return nil, invalid("token signature is not base64url")
	}
	if len(sig) == 0 {
		return nil, invalid("token has no signature")
	}

	pb, err := b64.DecodeString(p)
	if err != nil {
		return nil, invalid("token payload is not base64url")
	}
	tok := &Token{Alg: hdr.Alg, KeyID: hdr.Kid, signingInput: token[:len(h)+1+len(p)], signature: sig}
	if err := json.Unmarshal(pb, &tok.Claims); err != nil {
		return nil, &identity.Error{Code: identity.CodeInvalidToken, Message: "token payload is not a valid JSON claims set", Err: err}
	}
	return tok, nil
}

// errBadSignature is the result of checking a signature with a wrong key.
var errBadSignature = errors.New("signature does not verify")

// VerifySignature checks the token's signature with key, which must be of
// the type the token's algorithm needs.
func (t *Token) VerifySignature(key PublicKey) error {
	if !key.Supports(t.Alg) {
		return fmt.Errorf("key %q cannot verify %s", key.KeyID, t.Alg)
	}
	sum := sha256.Sum256([]byte(t.signingInput))
	switch k := key.Key.(type) {
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], t.signature) != nil {
			return errBadSignature
		}
		return nil
	case *ecdsa.PublicKey:
		// JWS ES256 signatures are the fixed-size concatenation R || S
		// (RFC 7518 §3.4), not ASN.1.
		if len(t.signature) != 64 {
			return errBadSignature
		}
		r := new(big.Int).SetBytes(t.signature[:32])
		s := new(big.Int).SetBytes(t.signature[32:])
		if !ecdsa.Verify(k, sum[:], r, s) {
			return errBadSignature
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T", key.Key)
}

// ValidateClaims checks the claims of a token whose signature is already
// verified: issuer, expiry, not-before, issued-at (each with leeway),
// audience, subject and pod binding. It returns the claims podid uses.
func ValidateClaims(cl *Claims, clusterName, issuer string, now time.Time, leeway time.Duration) (*identity.TokenClaims, error) {
	if err := checkIssuer(cl, clusterName, issuer); err != nil {
		return nil, err
	}
	if cl.Expiry == nil {
		return nil, invalid("token has no expiry (exp claim)")
	}
	exp := cl.Expiry.Time()
	if now.After(exp.Add(leeway)) {
		return nil, identity.Errorf(identity.CodeExpiredToken, "token expired at %s", exp.Format(time.RFC3339))
	}
	if cl.NotBefore != nil {
		if nbf := cl.NotBefore.Time(); now.Add(leeway).Before(nbf) {
			return nil, invalid("token is not valid before %s", nbf.Format(time.RFC3339))
		}
	}
	if cl.IssuedAt != nil {
		if iat := cl.IssuedAt.Time(); now.Add(leeway).Before(iat) {
			return nil, invalid("token was issued in the future, at %s", iat.Format(time.RFC3339))
		}
	}

	if !contains(cl.Audience, identity.Audience) {
		return nil, invalid("token audience %s does not include %q", quoteList(cl.Audience, 4), identity.Audience)
	}

	ns, sa, ok := splitSubject(cl.Subject)
	if !ok {
		return nil, invalid("token subject %q is not a service account (system:serviceaccount:<namespace>:<name>)", truncate(cl.Subject, 128))
	}
	k := cl.Kubernetes
	if k == nil {
		return nil, invalid("token has no kubernetes.io claim; it is not a Kubernetes service-account token")
	}
	if k.ServiceAccount == nil || k.Namespace != ns || k.ServiceAccount.Name != sa {
		var kname string
		if k.ServiceAccount != nil {
			kname = k.ServiceAccount.Name
		}
		return nil, invalid("token subject %q disagrees with its kubernetes.io claim (namespace %q, service account %q)",
			truncate(cl.Subject, 128), truncate(k.Namespace, 64), truncate(kname, 64))
	}
	if k.Pod == nil || k.Pod.Name == "" || k.Pod.UID == "" {
		return nil, invalid("token is not bound to a pod; use a projected service-account token with audience %q", identity.Audience)
	}

	out := &identity.TokenClaims{
		Issuer:             cl.Issuer,
		Subject:            cl.Subject,
		Audience:           append([]string(nil), cl.Audience...),
		ID:                 cl.ID,
		IssuedAt:           cl.IssuedAt.Time(),
		NotBefore:          cl.NotBefore.Time(),
		Expiry:             exp,
		Namespace:          ns,
		ServiceAccountName: sa,
		ServiceAccountUID:  k.ServiceAccount.UID,
		PodName:            k.Pod.Name,
		PodUID:             k.Pod.UID,
	}
	if k.Node != nil {
		out.NodeName = k.Node.Name
		out.NodeUID = k.Node.UID
	}
	return out, nil
}

func checkIssuer(cl *Claims, clusterName, issuer string) error {
	if cl.Issuer == "" {
		return invalid("token has no issuer (iss claim)")
	}
	if cl.Issuer != issuer {
		return invalid("token issuer %q does not match cluster %q issuer %q", truncate(cl.Issuer, 256), clusterName, issuer)
	}
	return nil
}

// splitSubject splits system:serviceaccount:<ns>:<name>. Kubernetes names
// cannot contain a colon, so anything else is not a service account.
func splitSubject(sub string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(sub, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return ns, name, true
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// quoteList renders at most max quoted items, so a hostile token cannot make
// an error message huge.
func quoteList(l []string, max int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range l {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(l)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(truncate(s, 128)))
	}
	b.WriteByte(']')
	return b.String()
}

// truncate bounds attacker-controlled strings quoted in messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
