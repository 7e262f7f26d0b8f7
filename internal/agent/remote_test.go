package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podid/podid/api"
)

// cannedOK is an EKS Auth AssumeRoleForPodIdentity response as the service
// sends it.
const cannedOK = `{
 "assumedRoleUser":{"arn":"arn:aws:sts::111122223333:assumed-role/app-role/eks-demo-app-abc","assumeRoleId":"AROAEXAMPLE:eks-demo-app-abc"},
 "audience":"pods.eks.amazonaws.com",
 "credentials":{"accessKeyId":"ASIAEXAMPLE","expiration":1772373600,"secretAccessKey":"wJalrXUtnFEMI/K7MDENG","sessionToken":"IQoJb3JpZ2luX2VjEXAMPLE"},
 "podIdentityAssociation":{"associationArn":"arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-0123456789abcdefg","associationId":"a-0123456789abcdefg"},
 "subject":{"namespace":"default","serviceAccount":"app"}
}`

// reply is one canned answer of the fake EKS Auth server.
type reply struct {
	status int
	typ    string // AWS error name; empty for success
	body   string // overrides the body
}

// eksAuth is a fake podid server endpoint: it records requests and answers
// from a script, repeating the last reply.
type eksAuth struct {
	t       *testing.T
	mu      sync.Mutex
	script  []reply
	calls   int
	reqs    []api.AssumeRoleForPodIdentityRequest
	paths   []string
	authz   []string
	blockCh chan struct{}
}

func (s *eksAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var in api.AssumeRoleForPodIdentityRequest
	if err := json.Unmarshal(raw, &in); err != nil {
		s.t.Errorf("server: bad body %q: %v", raw, err)
	}
	s.mu.Lock()
	s.calls++
	s.reqs = append(s.reqs, in)
	s.paths = append(s.paths, r.Method+" "+r.URL.Path)
	s.authz = append(s.authz, r.Header.Get("Authorization"))
	rep := reply{status: 200}
	if len(s.script) > 0 {
		rep = s.script[0]
		if len(s.script) > 1 {
			s.script = s.script[1:]
		}
	}
	block := s.blockCh
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case rep.body != "":
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
	case rep.typ != "":
		w.Header().Set("X-Amzn-ErrorType", rep.typ)
		w.WriteHeader(rep.status)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Type: rep.typ, Message: "canned " + rep.typ})
	default:
		_, _ = io.WriteString(w, cannedOK)
	}
}

func (s *eksAuth) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// sleepRecorder is an injectable Sleep that returns at once and records.
type sleepRecorder struct {
	mu     sync.Mutex
	sleeps []time.Duration
}

func (r *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.sleeps = append(r.sleeps, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *sleepRecorder) Sleeps() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.sleeps...)
}

func newClient(url string) *api.Client {
	return &api.Client{
		Endpoint:    url,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDAGENT", "agent-secret", ""),
		Region:      "us-west-2",
	}
}

type remoteFixture struct {
	srv     *eksAuth
	remote  *Remote
	sleeps  *sleepRecorder
	clock   *fakeClock
	metrics *Metrics
	logs    *bytes.Buffer
}

func newRemoteFixture(t *testing.T, script []reply, tweak func(*RemoteConfig)) *remoteFixture {
	t.Helper()
	f := &remoteFixture{
		srv:     &eksAuth{t: t, script: script},
		sleeps:  &sleepRecorder{},
		clock:   newClock(),
		metrics: NewMetrics(nil),
		logs:    &bytes.Buffer{},
	}
	ts := httptest.NewServer(f.srv)
	t.Cleanup(ts.Close)
	cfg := RemoteConfig{
		Client:   newClient(ts.URL),
		Cluster:  "demo",
		NodeName: "node-1",
		Sleep:    f.sleeps.Sleep,
		Now:      f.clock.Now,
		Logger:   slog.New(slog.NewTextHandler(f.logs, nil)),
		Metrics:  f.metrics,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	f.remote = NewRemote(cfg)
	return f
}

func TestRemoteSuccess(t *testing.T) {
	f := newRemoteFixture(t, nil, nil)
	tok := podToken(t, "app")
	got, err := f.remote.Retrieve(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	want := &Credentials{
		AccessKeyID:     "ASIAEXAMPLE",
		SecretAccessKey: "wJalrXUtnFEMI/K7MDENG",
		SessionToken:    "IQoJb3JpZ2luX2VjEXAMPLE",
		AccountID:       "111122223333",
		Expiration:      time.Unix(1772373600, 0).UTC(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]api.AssumeRoleForPodIdentityRequest{{Token: tok, EksNodeName: "node-1"}}, f.srv.reqs); diff != "" {
		t.Errorf("request body (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"POST /clusters/demo/assume-role-for-pod-identity"}, f.srv.paths); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if a := f.srv.authz[0]; !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=AKIDAGENT/") || !strings.Contains(a, "/eks-auth/aws4_request") {
		t.Errorf("Authorization = %q, want a SigV4 eks-auth signature", a)
	}
	if got := testutil.ToFloat64(f.metrics.serverCalls.WithLabelValues("ok")); got != 1 {
		t.Errorf(`server_calls_total{result="ok"} = %v`, got)
	}
}

func TestRemoteErrorMapping(t *testing.T) {
	tests := []struct {
		name         string
		reply        reply
		wantStatus   int
		wantCode     string
		wantAttempts int
	}{
		{"invalid token", reply{400, "InvalidTokenException", ""}, 400, "InvalidTokenException", 1},
		{"expired token", reply{400, "ExpiredTokenException", ""}, 400, "ExpiredTokenException", 1},
		{"invalid parameter", reply{400, "InvalidParameterException", ""}, 400, "InvalidParameterException", 1},
		{"invalid request", reply{400, "InvalidRequestException", ""}, 400, "InvalidRequestException", 1},
		{"access denied (EKS Auth's 400)", reply{400, "AccessDeniedException", ""}, 403, "AccessDeniedException", 1},
		{"no association", reply{404, "ResourceNotFoundException", ""}, 404, "ResourceNotFoundException", 1},
		{"throttled", reply{429, "ThrottlingException", ""}, 429, "ThrottlingException", 3},
		{"internal", reply{500, "InternalServerException", ""}, 500, "InternalServerException", 3},
		{"unavailable", reply{503, "ServiceUnavailableException", ""}, 503, "ServiceUnavailableException", 3},
		{"proxy 502 without AWS shape", reply{502, "", "<html>bad gateway</html>"}, 503, "ServiceUnavailableException", 3},
		{"429 without AWS shape", reply{429, "", "slow down"}, 429, "ThrottlingException", 3},
		{"unknown 4xx", reply{405, "UnknownOperationException", ""}, 500, "InternalServerException", 1},
		{"agent key signature wrong", reply{403, "InvalidSignatureException", ""}, 500, "AgentMisconfigured", 1},
		{"agent key unknown", reply{403, "UnrecognizedClientException", ""}, 500, "AgentMisconfigured", 1},
		{"agent key not bound to cluster", reply{403, "AccessDeniedException", ""}, 500, "AgentMisconfigured", 1},
		{"incomplete credentials", reply{200, "", `{"credentials":{"accessKeyId":"A"}}`}, 500, "InternalServerException", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newRemoteFixture(t, []reply{tt.reply}, nil)
			_, err := f.remote.Retrieve(context.Background(), podToken(t, "app"))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.Status != tt.wantStatus || e.Code != tt.wantCode {
				t.Errorf("got %d %s, want %d %s (%v)", e.Status, e.Code, tt.wantStatus, tt.wantCode, e)
			}
			if got := f.srv.Calls(); got != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tt.wantAttempts)
			}
			if got := len(f.sleeps.Sleeps()); got != tt.wantAttempts-1 {
				t.Errorf("backoff sleeps = %d, want %d", got, tt.wantAttempts-1)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

func TestRemoteRetryThenSuccess(t *testing.T) {
	f := newRemoteFixture(t, []reply{
		{503, "ServiceUnavailableException", ""},
		{429, "ThrottlingException", ""},
		{200, "", ""},
	}, func(c *RemoteConfig) { c.Backoff = 100 * time.Millisecond })
	if _, err := f.remote.Retrieve(context.Background(), podToken(t, "app")); err != nil {
		t.Fatal(err)
	}
	sleeps := f.sleeps.Sleeps()
	if len(sleeps) != 2 {
		t.Fatalf("sleeps = %v, want 2", sleeps)
	}
	// Jittered exponential: [base/2, base], then [base, 2·base].
	bounds := [][2]time.Duration{{50 * time.Millisecond, 100 * time.Millisecond}, {100 * time.Millisecond, 200 * time.Millisecond}}
	for i, s := range sleeps {
		if s < bounds[i][0] || s > bounds[i][1] {
			t.Errorf("sleep %d = %v, want within %v", i, s, bounds[i])
		}
	}
	m := f.metrics
	if ok, errs := testutil.ToFloat64(m.serverCalls.WithLabelValues("ok")), testutil.ToFloat64(m.serverCalls.WithLabelValues("error")); ok != 1 || errs != 2 {
		t.Errorf("server_calls_total ok=%v error=%v, want 1 and 2", ok, errs)
	}
	for _, code := range []string{"ServiceUnavailableException", "ThrottlingException"} {
		if got := testutil.ToFloat64(m.serverErrors.WithLabelValues(code)); got != 1 {
			t.Errorf("server_errors_total{code=%q} = %v, want 1", code, got)
		}
	}
}

func TestRemoteNetworkErrors(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		sleeps := &sleepRecorder{}
		r := NewRemote(RemoteConfig{Client: newClient("http://" + addr), Cluster: "demo", Sleep: sleeps.Sleep})
		_, err = r.Retrieve(context.Background(), podToken(t, "app"))
		var e *Error
		if !errors.As(err, &e) || e.Status != 503 {
			t.Fatalf("err = %v, want a 503 *Error", err)
		}
		if got := len(sleeps.Sleeps()); got != 2 {
			t.Errorf("retries = %d, want 2", got)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newRemoteFixture(t, nil, func(c *RemoteConfig) { c.Timeout = 20 * time.Millisecond })
		f.srv.blockCh = make(chan struct{})
		defer close(f.srv.blockCh)
		_, err := f.remote.Retrieve(context.Background(), podToken(t, "app"))
		var e *Error
		if !errors.As(err, &e) || e.Status != 503 || e.Code != "ServiceUnavailableException" {
			t.Fatalf("err = %v, want a 503 *Error", err)
		}
		if got := f.srv.Calls(); got != 3 {
			t.Errorf("attempts = %d, want 3", got)
		}
		if got := testutil.ToFloat64(f.metrics.serverErrors.WithLabelValues("timeout")); got != 3 {
			t.Errorf(`server_errors_total{code="timeout"} = %v, want 3`, got)
		}
	})
	t.Run("caller cancelled", func(t *testing.T) {
		f := newRemoteFixture(t, nil, nil)
		f.srv.blockCh = make(chan struct{})
		defer close(f.srv.blockCh)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for f.srv.Calls() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err := f.remote.Retrieve(ctx, podToken(t, "app"))
		var e *Error
		if !errors.As(err, &e) || e.Status != 503 {
			t.Fatalf("err = %v, want a 503 *Error", err)
		}
		if got := f.srv.Calls(); got != 1 {
			t.Errorf("attempts = %d, want 1: a cancelled caller is not retried", got)
		}
	})
}

func TestRemoteMisconfigLogThrottled(t *testing.T) {
	f := newRemoteFixture(t, []reply{{403, "UnrecognizedClientException", ""}}, nil)
	count := func() int { return strings.Count(f.logs.String(), "rejected the agent's credentials") }
	for range 5 {
		_, _ = f.remote.Retrieve(context.Background(), podToken(t, "app"))
	}
	if got := count(); got != 1 {
		t.Errorf("log lines = %d, want 1", got)
	}
	f.clock.Advance(59 * time.Second)
	_, _ = f.remote.Retrieve(context.Background(), podToken(t, "app"))
	if got := count(); got != 1 {
		t.Errorf("after 59s: log lines = %d, want 1", got)
	}
	f.clock.Advance(time.Second)
	_, _ = f.remote.Retrieve(context.Background(), podToken(t, "app"))
	if got := count(); got != 2 {
		t.Errorf("after a minute: log lines = %d, want 2", got)
	}
	if strings.Contains(f.logs.String(), "agent-secret") {
		t.Error("log contains the agent's secret key")
	}
}

func TestRemoteRateLimit(t *testing.T) {
	f := newRemoteFixture(t, nil, func(c *RemoteConfig) {
		c.RateLimit = 1
		c.Burst = 2
	})
	tok := podToken(t, "app")
	for range 4 {
		if _, err := f.remote.Retrieve(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	// The clock stands still: two calls fit the burst, then each waits a
	// further second for its token.
	if diff := cmp.Diff([]time.Duration{time.Second, 2 * time.Second}, f.sleeps.Sleeps()); diff != "" {
		t.Errorf("rate-limit waits (-want +got):\n%s", diff)
	}
	if got := f.srv.Calls(); got != 4 {
		t.Errorf("server calls = %d, want 4", got)
	}

	// A caller that cannot wait that long is throttled without a call.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := f.remote.Retrieve(ctx, tok)
	var e *Error
	if !errors.As(err, &e) || e.Status != 429 || e.Code != "ThrottlingException" {
		t.Fatalf("err = %v, want a 429 *Error", err)
	}
	if got := f.srv.Calls(); got != 4 {
		t.Errorf("server calls = %d, want still 4", got)
	}
	// The cancelled reservation was given back: the next wait is 3s, not 4s.
	if _, err := f.remote.Retrieve(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if s := f.sleeps.Sleeps(); s[len(s)-1] != 3*time.Second {
		t.Errorf("wait after a cancelled reservation = %v, want 3s", s[len(s)-1])
	}
}

func TestAccountFromARN(t *testing.T) {
	tests := map[string]string{
		"arn:aws:sts::111122223333:assumed-role/r/s":        "111122223333",
		"arn:aws-cn:sts::444455556666:assumed-role/r/s":     "444455556666",
		"arn:aws:sts::111122223333:assumed-role/r/s:with:x": "111122223333",
		"":               "",
		"not-an-arn":     "",
		"arn:aws:sts::1": "",
	}
	for in, want := range tests {
		if got := accountFromARN(in); got != want {
			t.Errorf("accountFromARN(%q) = %q, want %q", in, got, want)
		}
	}
}

// replica is one fake podid server endpoint of a multi-endpoint Remote.
type replica struct {
	*eksAuth
	client *api.Client
	url    string
}

func newReplica(t *testing.T, script ...reply) *replica {
	t.Helper()
	s := &eksAuth{t: t, script: script}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &replica{eksAuth: s, client: newClient(ts.URL), url: ts.URL}
}

// refusedReplica is an endpoint whose port nobody listens on.
func refusedReplica(t *testing.T) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return &replica{eksAuth: &eksAuth{t: t}, client: newClient(u), url: u}
}

// hangingReplica accepts the call and never answers until the test ends.
func hangingReplica(t *testing.T) *replica {
	t.Helper()
	r := newReplica(t)
	r.blockCh = make(chan struct{})
	// Registered after the server's Close, so it runs first and lets the
	// blocked handlers return.
	t.Cleanup(func() { close(r.blockCh) })
	return r
}

func newMultiRemote(t *testing.T, clock *fakeClock, sleeps *sleepRecorder, m *Metrics, replicas ...*replica) *Remote {
	t.Helper()
	cfg := RemoteConfig{
		Cluster: "demo", NodeName: "node-1",
		// A short attempt timeout keeps the hanging replica cheap; nothing
		// asserts on how long anything takes.
		Timeout: 100 * time.Millisecond,
		Sleep:   sleeps.Sleep, Now: clock.Now, Metrics: m,
	}
	for _, r := range replicas {
		cfg.Clients = append(cfg.Clients, r.client)
	}
	return NewRemote(cfg)
}

func callCounts(rs ...*replica) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.Calls()
	}
	return out
}

func TestRemoteFailover(t *testing.T) {
	refused, unavailable, hanging := refusedReplica(t), newReplica(t, reply{503, "ServiceUnavailableException", ""}), hangingReplica(t)
	proxy502 := newReplica(t, reply{502, "", "<html>bad gateway</html>"})
	healthy := newReplica(t)
	clock, sleeps, m := newClock(), &sleepRecorder{}, NewMetrics(nil)
	r := newMultiRemote(t, clock, sleeps, m, refused, unavailable, hanging, proxy502, healthy)

	if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	// Each broken endpoint was tried once, in order, with no backoff between:
	// another endpoint was always left to try.
	if diff := cmp.Diff([]int{0, 1, 1, 1, 1}, callCounts(refused, unavailable, hanging, proxy502, healthy)); diff != "" {
		t.Errorf("calls per endpoint (-want +got):\n%s", diff)
	}
	if s := sleeps.Sleeps(); len(s) != 0 {
		t.Errorf("backoff sleeps = %v, want none before every endpoint was tried", s)
	}
	for _, c := range []struct {
		r      *replica
		result string
		want   float64
	}{
		{refused, "error", 1}, {unavailable, "error", 1}, {hanging, "error", 1}, {proxy502, "error", 1}, {healthy, "ok", 1},
	} {
		if got := testutil.ToFloat64(m.endpointCalls.WithLabelValues(c.r.url, c.result)); got != c.want {
			t.Errorf(`endpoint_calls_total{endpoint=%q,result=%q} = %v, want %v`, c.r.url, c.result, got, c.want)
		}
	}
	for _, code := range []string{"network", "ServiceUnavailableException", "timeout", "UnknownError"} {
		if got := testutil.ToFloat64(m.serverErrors.WithLabelValues(code)); got != 1 {
			t.Errorf("server_errors_total{code=%q} = %v, want 1", code, got)
		}
	}

	// The failed endpoints are now skipped: the next calls go straight to
	// the healthy one.
	for range 3 {
		if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
			t.Fatalf("Retrieve: %v", err)
		}
	}
	if diff := cmp.Diff([]int{0, 1, 1, 1, 4}, callCounts(refused, unavailable, hanging, proxy502, healthy)); diff != "" {
		t.Errorf("calls per endpoint after failover (-want +got):\n%s", diff)
	}
	for _, rep := range []*replica{refused, unavailable, hanging, proxy502} {
		if got := testutil.ToFloat64(m.endpointUps.WithLabelValues(rep.url)); got != 0 {
			t.Errorf("endpoint_up{endpoint=%q} = %v, want 0", rep.url, got)
		}
	}
	if got := testutil.ToFloat64(m.endpointUps.WithLabelValues(healthy.url)); got != 1 {
		t.Errorf("endpoint_up{endpoint=%q} = %v, want 1", healthy.url, got)
	}
}

func TestRemoteAllEndpointsDown(t *testing.T) {
	a, b := refusedReplica(t), newReplica(t, reply{503, "ServiceUnavailableException", ""})
	clock, sleeps := newClock(), &sleepRecorder{}
	r := newMultiRemote(t, clock, sleeps, nil, a, b)
	for call := 1; call <= 2; call++ {
		_, err := r.Retrieve(context.Background(), podToken(t, "app"))
		var e *Error
		if !errors.As(err, &e) || e.Status != 503 || e.Code != "ServiceUnavailableException" {
			t.Fatalf("call %d: err = %v, want a 503 *Error", call, err)
		}
	}
	// Three attempts a call (the default), one backoff after both endpoints
	// failed. Marked down, the endpoints are still tried: with every one
	// down, skipping them would fail calls after the servers recover.
	if got := len(sleeps.Sleeps()); got != 2 {
		t.Errorf("backoff sleeps = %d, want 1 per call", got)
	}
	if got := b.Calls(); got < 2 || got > 4 {
		t.Errorf("calls to the 503 endpoint = %d, want 2 to 4 over two calls of 3 attempts", got)
	}

	// The refusing one comes back on its old port: the next call finds it
	// although its down interval has not passed.
	ln, err := net.Listen("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Skipf("cannot listen on the freed port again: %v", err)
	}
	srv := &http.Server{Handler: a.eksAuth}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if a.Calls() != 1 {
		t.Errorf("calls to the recovered endpoint = %d, want 1", a.Calls())
	}
}

func TestRemoteEndpointRecovery(t *testing.T) {
	a := newReplica(t, reply{503, "ServiceUnavailableException", ""}, reply{503, "ServiceUnavailableException", ""}, reply{200, "", ""})
	b := newReplica(t)
	clock, sleeps, m := newClock(), &sleepRecorder{}, NewMetrics(nil)
	r := newMultiRemote(t, clock, sleeps, m, a, b)
	r.cfg.EndpointDownMin, r.cfg.EndpointDownMax = time.Second, 4*time.Second
	call := func() {
		t.Helper()
		if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
			t.Fatal(err)
		}
	}

	call() // a: 503, b: ok
	if diff := cmp.Diff([]int{1, 1}, callCounts(a, b)); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
	// Down for 0.5s to 1s: skipped meanwhile.
	clock.Advance(499 * time.Millisecond)
	call()
	call()
	if diff := cmp.Diff([]int{1, 3}, callCounts(a, b)); diff != "" {
		t.Fatalf("calls while a is down (-want +got):\n%s", diff)
	}
	// Past the interval, one call probes a; it fails again and the call
	// fails over to b.
	clock.Advance(501 * time.Millisecond)
	call()
	if diff := cmp.Diff([]int{2, 4}, callCounts(a, b)); diff != "" {
		t.Fatalf("calls after the probe (-want +got):\n%s", diff)
	}
	// The second failure doubles the interval to 1s..2s.
	clock.Advance(999 * time.Millisecond)
	call()
	if diff := cmp.Diff([]int{2, 5}, callCounts(a, b)); diff != "" {
		t.Fatalf("calls within the longer interval (-want +got):\n%s", diff)
	}
	clock.Advance(1001 * time.Millisecond)
	call() // the probe of a succeeds
	if diff := cmp.Diff([]int{3, 5}, callCounts(a, b)); diff != "" {
		t.Fatalf("calls at the second probe (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(m.endpointUps.WithLabelValues(a.url)); got != 1 {
		t.Errorf("endpoint_up of the recovered endpoint = %v, want 1", got)
	}
	// Back in the rotation: the load is shared again.
	for range 4 {
		call()
	}
	if diff := cmp.Diff([]int{5, 7}, callCounts(a, b)); diff != "" {
		t.Errorf("calls after recovery (-want +got):\n%s", diff)
	}
	if s := sleeps.Sleeps(); len(s) != 0 {
		t.Errorf("backoff sleeps = %v, want none", s)
	}
}

func TestRemoteOneProbeAtATime(t *testing.T) {
	a := newReplica(t, reply{503, "ServiceUnavailableException", ""}, reply{200, "", ""})
	b := newReplica(t)
	clock := newClock()
	r := newMultiRemote(t, clock, &sleepRecorder{}, nil, a, b)
	r.cfg.Timeout = time.Minute
	if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	// The probe of a hangs; meanwhile other calls keep to b.
	a.mu.Lock()
	a.blockCh = make(chan struct{})
	a.mu.Unlock()
	probe := make(chan error, 1)
	go func() {
		_, err := r.Retrieve(context.Background(), podToken(t, "app"))
		probe <- err
	}()
	for a.Calls() < 2 {
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		if _, err := r.Retrieve(context.Background(), podToken(t, "app")); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]int{2, 4}, callCounts(a, b)); diff != "" {
		t.Errorf("calls during the probe (-want +got):\n%s", diff)
	}
	close(a.blockCh)
	if err := <-probe; err != nil {
		t.Fatalf("probe call: %v", err)
	}
}

func TestRemoteFailoverFinalAnswers(t *testing.T) {
	tests := []struct {
		name       string
		first      reply
		wantStatus int
		wantCalls  []int
		wantSleeps int
	}{
		{"token error is final", reply{400, "InvalidTokenException", ""}, 400, []int{1, 0}, 0},
		{"no association is final", reply{404, "ResourceNotFoundException", ""}, 404, []int{1, 0}, 0},
		{"agent key rejected is final", reply{403, "UnrecognizedClientException", ""}, 500, []int{1, 0}, 0},
		// Throttling is load: back off rather than hand it to the next
		// replica at once; the retry then goes round-robin to b.
		{"throttling backs off", reply{429, "ThrottlingException", ""}, 200, []int{1, 1}, 1},
		{"5xx fails over", reply{500, "InternalServerException", ""}, 200, []int{1, 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newReplica(t, tt.first, reply{200, "", ""}), newReplica(t)
			sleeps := &sleepRecorder{}
			r := newMultiRemote(t, newClock(), sleeps, nil, a, b)
			_, err := r.Retrieve(context.Background(), podToken(t, "app"))
			status := 200
			var e *Error
			if errors.As(err, &e) {
				status = e.Status
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d (%v)", status, tt.wantStatus, err)
			}
			if diff := cmp.Diff(tt.wantCalls, callCounts(a, b)); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if got := len(sleeps.Sleeps()); got != tt.wantSleeps {
				t.Errorf("sleeps = %d, want %d", got, tt.wantSleeps)
			}
		})
	}
}

// TestRemoteConcurrentFailuresCountOnce: when a replica dies, every call in
// flight to it fails; that is one failure, not dozens that would push its
// down interval to the maximum.
func TestRemoteConcurrentFailuresCountOnce(t *testing.T) {
	a, b := newReplica(t), newReplica(t)
	r := newMultiRemote(t, newClock(), &sleepRecorder{}, nil, a, b)
	ep := r.endpoints[0]
	var epochs []uint64
	for range 10 {
		i, epoch, probe := r.pick([]bool{false, true})
		if i != 0 || probe {
			t.Fatalf("pick = %d, probe %v; want endpoint 0 without probe", i, probe)
		}
		epochs = append(epochs, epoch)
	}
	for _, e := range epochs {
		r.record(ep, e, false, outcomeDown)
	}
	if ep.failures != 1 {
		t.Errorf("failures = %d, want 1", ep.failures)
	}
	// A success of a call that started before the failure does not reopen it.
	r.record(ep, epochs[0], false, outcomeUp)
	if ep.failures != 1 {
		t.Errorf("after a stale success: failures = %d, want 1", ep.failures)
	}
}

func TestEndpointName(t *testing.T) {
	for in, want := range map[string]string{
		"https://podid.example:8443":         "https://podid.example:8443",
		"https://user:pw@podid.example:8443": "https://podid.example:8443",
		"http://127.0.0.1:1/base":            "http://127.0.0.1:1/base",
	} {
		if got := endpointName(in); got != want {
			t.Errorf("endpointName(%q) = %q, want %q", in, got, want)
		}
	}
}
