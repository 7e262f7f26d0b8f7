// Package ststest is an in-process AWS STS for tests. It speaks the real STS
// Query protocol (AssumeRole and GetCallerIdentity), verifies every request's
// SigV4 signature with aws-sdk-go-v2's own signer, enforces the parameter
// rules of the STS model and documentation, and issues temporary credentials
// that are themselves accepted as callers, so role chaining and transitive
// session tags behave as they do against AWS.
package ststest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/podid/podid/internal/identity"
)

// Default identity of the base key pair.
const (
	DefaultAccount = "111122223333"
	// BaseAccessKeyID is the access key of the one long-term key pair every
	// server knows; Credentials returns it.
	BaseAccessKeyID = "AKIAPODIDTESTBASE001"
)

// maxBody bounds a request body; the largest legal AssumeRole (50 tags of
// 128+256 characters, a 2048-character policy) is far below it.
const maxBody = 1 << 20

// Call is one authenticated AssumeRole request, successful or not.
type Call struct {
	RequestID string
	// CallerAccessKeyID and CallerARN identify who signed the request.
	CallerAccessKeyID string
	CallerARN         string
	// Chained is true when the caller was itself an assumed-role session.
	Chained bool

	RoleARN           string
	RoleSessionName   string
	Tags              []identity.Tag // as sent, in order
	TransitiveTagKeys []string
	ExternalID        string
	Policy            string
	DurationSeconds   int // 0 when the parameter was not sent
	// EffectiveTags are the session's tags: the transitive tags inherited
	// from the calling session, then Tags.
	EffectiveTags []identity.Tag

	// AccessKeyID is the access key issued; empty when the call failed.
	AccessKeyID string
	// ErrorCode is the STS error answered; empty on success.
	ErrorCode string
}

// Option configures a Server.
type Option func(*Server)

// WithClock sets the server's clock, used for signature freshness and
// credential expiry.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithAccount sets the account of the base key pair's IAM user.
func WithAccount(account string) Option { return func(s *Server) { s.account = account } }

// WithListener makes the server accept connections on ln instead of a
// fresh loopback port, so a walkthrough can pin a known address. The
// server owns ln from then on; Close closes it.
func WithListener(ln net.Listener) Option { return func(s *Server) { s.ln = ln } }

// Server is a running fake STS.
type Server struct {
	// URL is the endpoint to give the SDK (sts.Options.BaseEndpoint).
	URL string

	srv *httptest.Server
	now func() time.Time
	// signer is per server: the SDK signer caches derived keys by access
	// key ID alone, and every server's base key has the same ID but its
	// own secret.
	signer  *v4.Signer
	account string
	ln      net.Listener

	mu       sync.Mutex
	keys     map[string]*principal // by access key ID
	calls    []Call
	failures []injected
	denied   map[string]bool
	maxDur   map[string]time.Duration
}

type injected struct {
	code, message string
	status        int
}

// principal is a caller the server knows: the base IAM user or a session it
// issued.
type principal struct {
	accessKeyID  string
	secret       string
	sessionToken string // "" for the base user
	expires      time.Time
	arn          string
	userID       string
	account      string
	// transitive are the session's transitive tags, handed on when the
	// session assumes another role.
	transitive []identity.Tag
}

func (p *principal) isSession() bool { return p.sessionToken != "" }

// New starts a fake STS; t.Cleanup closes it.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := Start(opts...)
	t.Cleanup(s.Close)
	return s
}

// Start starts a fake STS on a loopback port outside of a test, for local
// walkthroughs; Close stops it.
func Start(opts ...Option) *Server {
	s := &Server{
		now:     time.Now,
		account: DefaultAccount,
		keys:    map[string]*principal{},
		denied:  map[string]bool{},
		maxDur:  map[string]time.Duration{},
		signer:  v4.NewSigner(),
	}
	for _, o := range opts {
		o(s)
	}
	s.keys[BaseAccessKeyID] = &principal{
		accessKeyID: BaseAccessKeyID,
		secret:      randomString(30),
		arn:         "arn:aws:iam::" + s.account + ":user/podid-test",
		userID:      "AIDA" + strings.ToUpper(hex.EncodeToString([]byte(s.account)))[:16],
		account:     s.account,
	}
	if s.ln == nil {
		s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	} else {
		s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
		s.srv.Listener.Close()
		s.srv.Listener = s.ln
		s.srv.Start()
	}
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Reset forgets recorded calls, injected failures, denied roles and
// session limits; issued sessions stay valid.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
	s.failures = nil
	s.denied = map[string]bool{}
	s.maxDur = map[string]time.Duration{}
}

// Credentials returns the server's base key pair.
func (s *Server) Credentials() aws.CredentialsProvider {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.keys[BaseAccessKeyID]
	return credentials.NewStaticCredentialsProvider(p.accessKeyID, p.secret, "")
}

// Calls returns the AssumeRole calls recorded so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	copy(out, s.calls)
	return out
}

// FailNext makes the next authenticated request answer the given STS error,
// e.g. ("Throttling", 400, "Rate exceeded") or ("InternalFailure", 500, "").
func (s *Server) FailNext(code string, status int, message string) {
	s.FailNextN(1, code, status, message)
}

// FailNextN makes the next n authenticated requests answer the given error;
// use it to outlast the SDK's retries.
func (s *Server) FailNextN(n int, code string, status int, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, injected{code: code, status: status, message: message})
	}
}

// DenyRole makes every AssumeRole on roleARN answer AccessDenied, as when the
// role's trust policy does not trust the caller.
func (s *Server) DenyRole(roleARN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[roleARN] = true
}

// SetMaxSessionDuration sets the role's MaxSessionDuration (IAM's default
// is one hour; unset roles here accept STS's full 12 hours).
func (s *Server) SetMaxSessionDuration(roleARN string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxDur[roleARN] = d
}

// stsError is an STS error answer.
type stsError struct {
	status  int
	code    string
	message string
}

func (e *stsError) Error() string { return e.code + ": " + e.message }

func errValidation(msg string) *stsError {
	return &stsError{status: http.StatusBadRequest, code: "ValidationError", message: msg}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("x-amzn-RequestId", reqID)
	body, err := s.handle(r, reqID)
	if err != nil {
		writeError(w, err, reqID)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// handle is the one place requests are answered; every failure comes back
// as an error and writeError shapes it.
func (s *Server) handle(r *http.Request, reqID string) ([]byte, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, &stsError{status: http.StatusMethodNotAllowed, code: "InvalidAction", message: "STS accepts GET and POST"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, &stsError{status: http.StatusBadRequest, code: "MalformedInput", message: "cannot read request body"}
	}
	if len(body) > maxBody {
		return nil, &stsError{status: http.StatusRequestEntityTooLarge, code: "RequestEntityTooLarge", message: "request body too large"}
	}
	caller, err := s.authenticate(r, body)
	if err != nil {
		return nil, err
	}
	params := r.URL.Query()
	if r.Method == http.MethodPost && len(body) > 0 {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, &stsError{status: http.StatusBadRequest, code: "MalformedQueryString", message: "request body is not a valid form"}
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	action := params.Get("Action")
	if v := params.Get("Version"); v != "2011-06-15" {
		return nil, &stsError{status: http.StatusBadRequest, code: "InvalidAction", message: "Could not find operation " + action + " for version " + v}
	}
	switch action {
	case "AssumeRole":
		return s.assumeRole(caller, params, reqID)
	case "GetCallerIdentity":
		if err := s.takeFailure(); err != nil {
			return nil, err
		}
		return marshal(getCallerIdentityResponse{
			Result: getCallerIdentityResult{Arn: caller.arn, UserID: caller.userID, Account: caller.account},
			Meta:   responseMetadata{RequestID: reqID},
		})
	default:
		return nil, &stsError{status: http.StatusBadRequest, code: "InvalidAction", message: "Could not find operation " + action + " for version 2011-06-15"}
	}
}

// takeFailure pops one injected failure, if any.
func (s *Server) takeFailure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) == 0 {
		return nil
	}
	f := s.failures[0]
	s.failures = s.failures[1:]
	return &stsError{status: f.status, code: f.code, message: f.message}
}

func (s *Server) assumeRole(caller *principal, params url.Values, reqID string) ([]byte, error) {
	in, perr := parseAssumeRole(params)
	call := Call{
		RequestID:         reqID,
		CallerAccessKeyID: caller.accessKeyID,
		CallerARN:         caller.arn,
		Chained:           caller.isSession(),
		RoleARN:           in.roleARN,
		RoleSessionName:   in.sessionName,
		Tags:              in.tags,
		TransitiveTagKeys: in.transitive,
		ExternalID:        in.externalID,
		Policy:            in.policy,
		DurationSeconds:   in.durationSeconds,
	}
	body, err := s.issue(caller, in, perr, &call)
	if err != nil {
		var se *stsError
		if errors.As(err, &se) {
			call.ErrorCode = se.code
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	return body, err
}

func (s *Server) issue(caller *principal, in assumeRoleParams, parseErr error, call *Call) ([]byte, error) {
	if err := s.takeFailure(); err != nil {
		return nil, err
	}
	if parseErr != nil {
		return nil, parseErr
	}
	role, err := validateAssumeRole(in, caller)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	denied := s.denied[in.roleARN]
	maxDur, hasMax := s.maxDur[in.roleARN]
	s.mu.Unlock()
	if denied {
		return nil, &stsError{status: http.StatusForbidden, code: "AccessDenied",
			message: "User: " + caller.arn + " is not authorized to perform: sts:AssumeRole on resource: " + in.roleARN}
	}
	duration := time.Hour
	if in.hasDuration {
		duration = time.Duration(in.durationSeconds) * time.Second
	}
	if hasMax && duration > maxDur {
		return nil, errValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}

	effective := append(append([]identity.Tag{}, caller.transitive...), in.tags...)
	call.EffectiveTags = effective
	transitive := append([]identity.Tag{}, caller.transitive...)
	for _, k := range in.transitive {
		for _, t := range in.tags {
			if strings.EqualFold(t.Key, k) {
				transitive = append(transitive, t)
				break
			}
		}
	}
	packed := packedPolicySize(in.policy, effective)
	if packed > 100 {
		return nil, &stsError{status: http.StatusBadRequest, code: "PackedPolicyTooLarge",
			message: "Packed size of session policies and session tags exceeds the limit."}
	}

	now := s.now().UTC()
	sess := &principal{
		accessKeyID:  "ASIA" + randomUpper(16),
		secret:       randomString(30),
		sessionToken: "IQoJb3JpZ2luX2VjE" + randomString(96),
		expires:      now.Add(duration),
		arn:          "arn:" + role.partition + ":sts::" + role.account + ":assumed-role/" + role.name + "/" + in.sessionName,
		userID:       role.uniqueID + ":" + in.sessionName,
		account:      role.account,
		transitive:   transitive,
	}
	s.mu.Lock()
	s.keys[sess.accessKeyID] = sess
	s.mu.Unlock()
	call.AccessKeyID = sess.accessKeyID

	return marshal(assumeRoleResponse{
		Result: assumeRoleResult{
			Credentials: credentialsXML{
				AccessKeyID:     sess.accessKeyID,
				SecretAccessKey: sess.secret,
				SessionToken:    sess.sessionToken,
				Expiration:      sess.expires.Format(time.RFC3339),
			},
			AssumedRoleUser:  assumedRoleUserXML{Arn: sess.arn, AssumedRoleID: sess.userID},
			PackedPolicySize: packed,
		},
		Meta: responseMetadata{RequestID: call.RequestID},
	})
}

// packedPolicySize estimates STS's packed-size percentage. The real packing
// is undocumented; this is proportional to the plaintext so large inputs
// approach the limit the way they do against AWS.
func packedPolicySize(policy string, tags []identity.Tag) int {
	n := len(policy)
	for _, t := range tags {
		n += len(t.Key) + len(t.Value)
	}
	return (n*100 + 8191) / 8192
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// randomString returns n random bytes in base64 (without padding).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

func randomUpper(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
