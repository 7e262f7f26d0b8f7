package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
)

// apiKind says which API a route belongs to, since the EKS and EKS Auth
// models give some errors different names and statuses.
type apiKind int

const (
	apiEKS apiKind = iota
	apiEKSAuth
	apiAdmin
)

// signingName is the SigV4 service name each API is signed for. The admin
// API shares the association API's, so the same client config works.
func (k apiKind) signingName() string {
	if k == apiEKSAuth {
		return "eks-auth"
	}
	return "eks"
}

// errorShape returns the AWS error name and HTTP status of err.
func errorShape(kind apiKind, err error) (name string, status int) {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return ae.Type, http.StatusForbidden
	}
	var re *requestError
	if errors.As(err, &re) {
		return re.name, re.status
	}
	code := identity.CodeOf(err)
	name = identity.CodeName(code)
	switch code {
	case identity.CodeNotFound:
		return name, http.StatusNotFound
	case identity.CodeInUse:
		return name, http.StatusConflict
	case identity.CodeThrottling:
		return name, http.StatusTooManyRequests
	case identity.CodeServiceUnavailable:
		return name, http.StatusServiceUnavailable
	case identity.CodeInternal:
		if kind != apiEKSAuth {
			return "ServerException", http.StatusInternalServerError
		}
		return name, http.StatusInternalServerError
	case identity.CodeAccessDenied:
		if kind != apiEKSAuth {
			return name, http.StatusForbidden
		}
	}
	return name, http.StatusBadRequest
}

// requestError is an HTTP-level failure that has no domain code: unknown
// routes, wrong methods, scope denials.
type requestError struct {
	name    string
	status  int
	message string
}

func (e *requestError) Error() string { return e.message }

// writeError is the one place that turns an error into the AWS error shape.
// Internal causes are logged, never sent.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, kind apiKind, err error) (name string, status int) {
	name, status = errorShape(kind, err)
	msg := err.Error()
	var de *identity.Error
	if errors.As(err, &de) {
		msg = de.Message
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "errorType", name, "error", err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", name)
	w.WriteHeader(status)
	body, _ := json.Marshal(api.ErrorBody{Type: name, Message: msg})
	_, _ = w.Write(body)
	return name, status
}
