package agent

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// CredentialsPath is where the AWS SDKs fetch pod credentials.
const CredentialsPath = "/v1/credentials"

// DefaultAllowedHosts are the link-local addresses the EKS agent serves on
// and the SDKs accept for the container credentials provider.
var DefaultAllowedHosts = []string{"169.254.170.23", "[fd00:ec2::23]"}

// HandlerConfig configures the credentials endpoint.
type HandlerConfig struct {
	// Retriever is normally a *Cache in front of a *Remote.
	Retriever Retriever
	// AllowedHosts are the host[:port] values accepted in the Host header;
	// only the host part is compared. Empty means DefaultAllowedHosts.
	AllowedHosts []string
	// AllowLoopback also accepts localhost and loopback addresses, for
	// running the agent off the link-local addresses (tests, kind).
	AllowLoopback bool
	// MaxTokenSize rejects larger Authorization values; default 16 KiB.
	MaxTokenSize int
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Ready, if set, must report true before credentials are served.
	Ready func() bool
}

type handler struct {
	cfg      HandlerConfig
	addrs    []netip.Addr
	names    []string
	maxToken int
	log      *slog.Logger
}

// NewHandler returns the credentials endpoint: GET /v1/credentials with the
// pod's projected token in the Authorization header.
func NewHandler(cfg HandlerConfig) http.Handler {
	h := &handler{cfg: cfg, maxToken: cfg.MaxTokenSize, log: cfg.Logger}
	if h.maxToken <= 0 {
		h.maxToken = 16 << 10
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	hosts := cfg.AllowedHosts
	if len(hosts) == 0 {
		hosts = DefaultAllowedHosts
	}
	for _, hp := range hosts {
		name := hostname(hp)
		if a, err := netip.ParseAddr(name); err == nil {
			h.addrs = append(h.addrs, a.Unmap().WithZone(""))
		} else if name != "" {
			h.names = append(h.names, name)
		}
	}
	return h
}

// hostname returns the lower-cased host of a Host header value, without port
// or brackets.
func hostname(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// hostAllowed guards against DNS rebinding: a web page in a pod's browser
// (or any client tricked into it) could otherwise point a name it controls
// at the link-local address and read credentials cross-origin.
func (h *handler) hostAllowed(host string) bool {
	name := hostname(host)
	if name == "" {
		return false
	}
	if a, err := netip.ParseAddr(name); err == nil {
		a = a.Unmap().WithZone("")
		if h.cfg.AllowLoopback && a.IsLoopback() {
			return true
		}
		for _, allowed := range h.addrs {
			if a == allowed {
				return true
			}
		}
		return false
	}
	if h.cfg.AllowLoopback && name == "localhost" {
		return true
	}
	for _, allowed := range h.names {
		if name == allowed {
			return true
		}
	}
	return false
}

// credentialsBody is the container credentials provider's response shape;
// field order is the one the EKS agent writes.
type credentialsBody struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	AccountID       string `json:"AccountId"`
	Expiration      string `json:"Expiration"`
}

// errorBody is what the SDKs read from an error response (code, message).
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, err := h.serve(w, r)
	if err != nil {
		status = h.writeError(w, r, err)
	}
	h.cfg.Metrics.request(status, time.Since(start))
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) (int, error) {
	if !h.hostAllowed(r.Host) {
		return 0, &Error{Status: http.StatusForbidden, Code: "AccessDenied", Message: "host not allowed: " + truncate(r.Host, 64)}
	}
	if r.URL.Path != CredentialsPath {
		return 0, &Error{Status: http.StatusNotFound, Code: "NotFound", Message: "no such path; credentials are at " + CredentialsPath}
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return 0, &Error{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed", Message: "only GET is allowed"}
	}
	if h.cfg.Ready != nil && !h.cfg.Ready() {
		return 0, &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException", Message: "the node agent is not ready yet"}
	}
	token := strings.TrimSpace(r.Header.Get("Authorization"))
	// The SDKs send the raw token; tolerate clients that add the scheme.
	if len(token) > 7 && strings.EqualFold(token[:7], "Bearer ") {
		token = strings.TrimSpace(token[7:])
	}
	switch {
	case token == "":
		return 0, &Error{Status: http.StatusBadRequest, Code: "InvalidToken", Message: "the Authorization header with the service account token is missing"}
	case len(token) > h.maxToken:
		return 0, &Error{Status: http.StatusBadRequest, Code: "InvalidToken", Message: "the service account token is too large"}
	case !wellFormedToken(token):
		return 0, &Error{Status: http.StatusBadRequest, Code: "InvalidToken", Message: "the service account token is not a JWT"}
	}
	creds, err := h.cfg.Retriever.Retrieve(r.Context(), token)
	if err != nil {
		return 0, err
	}
	if creds == nil {
		return 0, errors.New("retriever returned no credentials and no error")
	}
	body, err := json.Marshal(credentialsBody{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           creds.SessionToken,
		AccountID:       creds.AccountID,
		Expiration:      creds.Expiration.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return 0, err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return http.StatusOK, nil
}

// writeError is the one place that turns an error into a response.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "InternalServerException", Message: "internal error in the node agent", Err: err}
	}
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelWarn
	}
	// The error may wrap the server's message, never the token or secrets.
	h.log.LogAttrs(r.Context(), level, "credential request failed",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr),
		slog.Int("status", e.Status), slog.String("code", e.Code), slog.String("error", err.Error()))
	body, _ := json.Marshal(errorBody{Code: e.Code, Message: e.Message})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
	return e.Status
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// NewProbeHandler serves /healthz, which answers 200 while the process runs,
// and /readyz, which answers 200 once ready reports true (nil means always).
func NewProbeHandler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready != nil && !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
