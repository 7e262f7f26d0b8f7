package auth

import "net/http"

// AWS error names for rejected signatures. Every one of them is answered
// with HTTP 403, as AWS does.
const (
	ErrMissingAuthenticationToken = "MissingAuthenticationTokenException"
	ErrIncompleteSignature        = "IncompleteSignatureException"
	ErrUnrecognizedClient         = "UnrecognizedClientException"
	ErrInvalidSignature           = "InvalidSignatureException"
)

// Error is why a request's signature was rejected. Type is the AWS error name
// the HTTP layer sends in X-Amzn-ErrorType and __type; Message is safe to send
// to the caller: it never holds a secret key.
type Error struct {
	Type    string
	Message string
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// StatusCode is the HTTP status for every authentication failure.
func (e *Error) StatusCode() int { return http.StatusForbidden }

func authError(typ, msg string) *Error { return &Error{Type: typ, Message: msg} }
