package identity

import (
	"errors"
	"fmt"
)

// Code classifies a domain error. The HTTP layers map each code to the AWS
// error name and status of the API they serve; nothing else decides how an
// error looks on the wire.
type Code int

// Error codes. They follow the error shapes of the EKS and EKS Auth models.
const (
	CodeInternal Code = iota
	CodeInvalidParameter
	CodeInvalidRequest
	CodeNotFound
	CodeInUse
	CodeAccessDenied
	CodeInvalidToken
	CodeExpiredToken
	CodeThrottling
	CodeServiceUnavailable
)

// Error is a domain error with a message a person can act on.
type Error struct {
	Code    Code
	Message string
	// Err is the underlying cause, kept for logs; it is never sent to a client.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, or CodeInternal for errors that are not
// domain errors.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Store errors. Backends return these (wrapped or bare) so the domain can
// tell a missing row or a uniqueness conflict from a broken database.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)
