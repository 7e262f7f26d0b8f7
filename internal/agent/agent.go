// Package agent is the core of the podid node agent: the credentials endpoint
// the AWS SDKs call inside pods (GET /v1/credentials on 169.254.170.23), a
// per-token credential cache that renews ahead of expiry, and the retriever
// that exchanges a pod's token for credentials at podid server.
//
// A Retriever turns a service-account token into credentials. Remote is the
// one that calls the server; Cache is another that wraps it.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Credentials are temporary AWS credentials for a pod.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	AccountID       string
	Expiration      time.Time
}

// LogValue keeps the secret key and session token out of logs even when a
// whole Credentials value is logged by mistake.
func (c *Credentials) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(
		slog.String("accessKeyId", c.AccessKeyID),
		slog.String("accountId", c.AccountID),
		slog.Time("expiration", c.Expiration),
	)
}

// String hides the secrets for fmt as LogValue does for slog.
func (c *Credentials) String() string {
	if c == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{AccessKeyID:%s AccountID:%s Expiration:%s SecretAccessKey:<redacted> SessionToken:<redacted>}",
		c.AccessKeyID, c.AccountID, c.Expiration.UTC().Format(time.RFC3339))
}

// Retriever exchanges a pod's projected service-account token for
// credentials. Errors should be *Error so the HTTP layer keeps their meaning.
type Retriever interface {
	Retrieve(ctx context.Context, token string) (*Credentials, error)
}

// Error is a failure to get credentials, carrying the HTTP status the
// credentials endpoint answers with.
type Error struct {
	// Status is the HTTP status for the pod: 400, 403, 404, 429, 500 or 503.
	Status int
	// Code is the AWS error name the server sent (e.g.
	// InvalidTokenException), or a short code for failures found locally.
	Code string
	// Message is safe to send to the pod.
	Message string
	// Err is the cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// tokenError reports whether err condemns the token itself, so a cached entry
// for it must go: a retry with the same token cannot succeed. Throttling and
// server-side failures say nothing about the token.
func tokenError(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Status >= 400 && e.Status < 500 && e.Status != 429
}

// tokenKey is the cache key of a token. Hashing keeps the bearer secret out
// of map keys and singleflight keys, which show up in heap dumps and traces.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// fingerprint is a short, non-reversible name for a token for logs.
func (k tokenKey) fingerprint() string { return hex.EncodeToString(k[:6]) }

// wellFormedToken reports whether token looks like a compact JWS: three
// non-empty base64url parts. It only screens out garbage before a server
// call; podid server verifies the token.
func wellFormedToken(token string) bool {
	parts := 0
	partLen := 0
	for i := 0; i < len(token); i++ {
		switch tokenByte[token[i]] {
		case dot:
			if partLen == 0 {
				return false
			}
			parts++
			partLen = 0
		case b64:
			partLen++
		default:
			return false
		}
	}
	return parts == 2 && partLen > 0
}

// Byte classes for wellFormedToken: a table lookup instead of a chain of
// comparisons, since the check runs on every request, cache hits included.
const (
	invalid = iota
	b64
	dot
)

var tokenByte = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c == '.':
			t[c] = dot
		// '=' padding is not base64url, but some encoders add it; the
		// server decides.
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '=':
			t[c] = b64
		}
	}
	return t
}()

// tokenTimes reads exp and iat from a JWT's payload without verifying it.
// They decide only how long the cache keeps renewing credentials for the
// token; the server verifies the token on every exchange. Missing or
// unreadable claims give zero times.
func tokenTimes(token string) (exp, iat time.Time) {
	_, rest, ok := strings.Cut(token, ".")
	if !ok {
		return
	}
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
		Iat *json.Number `json:"iat"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return
	}
	return numericDate(claims.Exp), numericDate(claims.Iat)
}

func numericDate(n *json.Number) time.Time {
	if n == nil {
		return time.Time{}
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}
	}
	return time.Unix(int64(f), 0)
}
