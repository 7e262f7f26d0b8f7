// Package server is podid server's HTTP layer: the EKS pod identity
// association API, the EKS Auth AssumeRoleForPodIdentity API and podid's
// admin API. Handlers decode, call the identity service and encode; every
// failure goes through writeError.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
)

// Body limits. A projected token is a few KiB; association bodies are small
// too, and a session policy is at most 2 KiB.
const (
	maxBody       = 1 << 20
	maxAssumeBody = 64 << 10
)

// Config configures a Server.
type Config struct {
	Service *identity.Service
	Auth    *auth.Verifier
	// KeyLimiter, if set, bounds AssumeRoleForPodIdentity calls per key.
	KeyLimiter interface {
		AllowKey(accessKeyID string) error
	}
	// Registerer receives podid_server_requests_total and
	// podid_server_request_duration_seconds; nil skips them.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Server serves podid's HTTP APIs.
type Server struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	keys     interface{ AllowKey(string) error }
	svc      *identity.Service
	auth     *auth.Verifier
	log      *slog.Logger
	mux      *http.ServeMux
}

// New returns a Server; it does not listen. Use Handler with any http.Server.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Auth == nil {
		return nil, errors.New("server: Service and Auth are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{svc: cfg.Service, auth: cfg.Auth, keys: cfg.KeyLimiter, log: cfg.Logger, mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podid_server_requests_total",
			Help: "API calls by operation, HTTP status and AWS error type (empty on success).",
		}, []string{"operation", "code", "error_type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podid_server_request_duration_seconds",
			Help:    "Time to answer an API call, by operation.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"operation"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.requests); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(s.duration); err != nil {
			return nil, err
		}
	}
	s.routes()
	return s, nil
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux would answer a path with ".", ".." or "//" with a
		// redirect no AWS client follows; say plainly there is no such
		// operation instead.
		if p := r.URL.Path; p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != strings.TrimSuffix(p, "/")) || strings.HasSuffix(p, "//") {
			s.writeError(w, r, apiEKS, &requestError{name: "UnknownOperationException", status: http.StatusNotFound,
				message: fmt.Sprintf("no operation at %s %s", r.Method, truncatePath(p))})
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// operation describes one API operation: its API, the scopes that may call
// it and its handler.
type operation struct {
	name   string
	kind   apiKind
	write  bool // admin scope only
	assume bool // AssumeRoleForPodIdentity: admin and agent scopes
	limit  int64
	handle func(r *request) (any, error)
}

// request is what a handler gets: the verified caller and the body.
type request struct {
	*http.Request
	principal *auth.Principal
	body      []byte
}

func (s *Server) routes() {
	const assoc = "/clusters/{clusterName}/pod-identity-associations"
	s.handle("POST /clusters/{clusterName}/assume-role-for-pod-identity", operation{name: "AssumeRoleForPodIdentity", kind: apiEKSAuth, assume: true, limit: maxAssumeBody, handle: s.assumeRole})
	s.handle("POST "+assoc, operation{name: "CreatePodIdentityAssociation", kind: apiEKS, write: true, handle: s.createAssociation})
	s.handle("GET "+assoc, operation{name: "ListPodIdentityAssociations", kind: apiEKS, handle: s.listAssociations})
	s.handle("GET "+assoc+"/{associationId}", operation{name: "DescribePodIdentityAssociation", kind: apiEKS, handle: s.describeAssociation})
	s.handle("POST "+assoc+"/{associationId}", operation{name: "UpdatePodIdentityAssociation", kind: apiEKS, write: true, handle: s.updateAssociation})
	s.handle("DELETE "+assoc+"/{associationId}", operation{name: "DeletePodIdentityAssociation", kind: apiEKS, write: true, handle: s.deleteAssociation})

	const admin = "/podid/v1"
	s.handle("GET "+admin+"/clusters", operation{name: "ListClusters", kind: apiAdmin, handle: s.listClusters})
	s.handle("POST "+admin+"/clusters", operation{name: "RegisterCluster", kind: apiAdmin, write: true, handle: s.registerCluster})
	s.handle("GET "+admin+"/clusters/{clusterName}", operation{name: "DescribeCluster", kind: apiAdmin, handle: s.describeCluster})
	s.handle("PUT "+admin+"/clusters/{clusterName}", operation{name: "UpdateCluster", kind: apiAdmin, write: true, handle: s.updateCluster})
	s.handle("DELETE "+admin+"/clusters/{clusterName}", operation{name: "DeleteCluster", kind: apiAdmin, write: true, handle: s.deleteCluster})
	s.handle("GET "+admin+"/audit", operation{name: "ListAuditEvents", kind: apiAdmin, handle: s.listAudit})

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, apiEKS, &requestError{name: "UnknownOperationException", status: http.StatusNotFound,
			message: fmt.Sprintf("no operation at %s %s", r.Method, truncatePath(r.URL.Path))})
	})
}

func truncatePath(p string) string {
	if len(p) > 200 {
		return p[:200] + "…"
	}
	return p
}

// handle registers op: it reads the bounded body, verifies the signature,
// checks the caller's scope, runs the handler and writes its JSON result.
func (s *Server) handle(pattern string, op operation) {
	if op.limit == 0 {
		op.limit = maxBody
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status, err := s.serve(w, r, op)
		errType := ""
		if err != nil {
			errType, status = s.writeError(w, r, op.kind, err)
		}
		elapsed := time.Since(start)
		s.requests.WithLabelValues(op.name, strconv.Itoa(status), errType).Inc()
		s.duration.WithLabelValues(op.name).Observe(elapsed.Seconds())
		s.log.DebugContext(r.Context(), "request", "operation", op.name, "status", status, "duration", elapsed)
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, op operation) (int, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, op.limit+1))
	if err != nil {
		return 0, &requestError{name: "InvalidRequestException", status: http.StatusBadRequest, message: "could not read the request body: " + err.Error()}
	}
	if int64(len(body)) > op.limit {
		return 0, &requestError{name: "InvalidRequestException", status: http.StatusRequestEntityTooLarge, message: fmt.Sprintf("the request body is larger than %d bytes", op.limit)}
	}
	p, err := s.auth.Verify(r, body, op.kind.signingName())
	if err != nil {
		return 0, err
	}
	if err := authorize(p, op, r.PathValue("clusterName")); err != nil {
		return 0, err
	}
	if op.assume && s.keys != nil {
		if err := s.keys.AllowKey(p.AccessKeyID); err != nil {
			return 0, &identity.Error{Code: identity.CodeThrottling, Message: err.Error() + "; retry with backoff", Err: err}
		}
	}
	out, err := op.handle(&request{Request: r, principal: p, body: body})
	if err != nil {
		return 0, err
	}
	buf, err := json.Marshal(out)
	if err != nil {
		return 0, fmt.Errorf("encoding %s response: %w", op.name, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
	return http.StatusOK, nil
}

// authorize applies the key scopes: admin may do everything, read-only may
// only read, agent may only call AssumeRoleForPodIdentity for its clusters.
func authorize(p *auth.Principal, op operation, cluster string) error {
	deny := func(why string) error {
		return &requestError{name: "AccessDeniedException", status: http.StatusForbidden,
			message: fmt.Sprintf("key %q (scope %s) is not authorized to perform %s: %s", p.Name, p.Scope, op.name, why)}
	}
	switch p.Scope {
	case auth.ScopeAdmin:
		return nil
	case auth.ScopeReadOnly:
		if op.write || op.assume {
			return deny("read-only keys can only read")
		}
		return nil
	case auth.ScopeAgent:
		if !op.assume {
			return deny("agent keys can only call AssumeRoleForPodIdentity")
		}
		if !p.MayCallCluster(cluster) {
			return deny(fmt.Sprintf("the key is not bound to cluster %q", cluster))
		}
		return nil
	}
	return deny("unknown scope")
}

// decode reads a JSON object body into v. Type errors name the field.
func decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return identity.Errorf(identity.CodeInvalidParameter, "%s must be a JSON %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		case errors.As(err, &te):
			return identity.Errorf(identity.CodeInvalidParameter, "the request body must be a JSON object, not %s", te.Value)
		case errors.As(err, &se):
			return identity.Errorf(identity.CodeInvalidRequest, "the request body is not valid JSON: %v (at byte %d)", se, se.Offset)
		}
		return identity.Errorf(identity.CodeInvalidRequest, "the request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return identity.Errorf(identity.CodeInvalidRequest, "the request body has data after its JSON object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch {
	case goKind == "ptr" || goKind == "string":
		return "string"
	case goKind == "bool":
		return "boolean"
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "map" || goKind == "struct":
		return "object"
	case goKind == "slice":
		return "array"
	}
	return goKind
}

// Run serves on ln until ctx ends, then shuts down gracefully. With
// certFile and keyFile it serves HTTPS.
func (s *Server) Run(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if certFile != "" {
			errc <- srv.ServeTLS(ln, certFile, keyFile)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	return nil
}
