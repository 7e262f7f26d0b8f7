package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// stubRetriever answers every token with fixed credentials or a fixed error.
type stubRetriever struct {
	creds *Credentials
	err   error
	calls int
	last  string
}

func (s *stubRetriever) Retrieve(_ context.Context, token string) (*Credentials, error) {
	s.calls++
	s.last = token
	return s.creds, s.err
}

var goldenCreds = &Credentials{
	AccessKeyID:     "ASIAEXAMPLEEXAMPLE01",
	SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	SessionToken:    "IQoJb3JpZ2luX2VjEXAMPLE+/=",
	AccountID:       "111122223333",
	Expiration:      time.Date(2026, 3, 1, 18, 0, 0, 0, time.FixedZone("CET", 3600)),
}

func credRequest(method, host, authz string) *http.Request {
	r := httptest.NewRequest(method, CredentialsPath, nil)
	r.Host = host
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

func TestHandlerSuccessGolden(t *testing.T) {
	stub := &stubRetriever{creds: goldenCreds}
	h := NewHandler(HandlerConfig{Retriever: stub})
	tok := podToken(t, "app")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, credRequest(http.MethodGet, "169.254.170.23", tok))
	if w.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if stub.last != tok {
		t.Errorf("retriever got token %q, want the Authorization value", stub.last)
	}
	golden := filepath.Join("testdata", "credentials.golden.json")
	if *update {
		if err := os.WriteFile(golden, w.Body.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), w.Body.String()); diff != "" {
		t.Errorf("body (-golden +got):\n%s", diff)
	}
	// What the SDKs read: RFC 3339 UTC expiry and the five fields.
	var got map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["Expiration"] != "2026-03-01T17:00:00Z" {
		t.Errorf("Expiration = %q, want UTC RFC 3339", got["Expiration"])
	}
}

func TestHandlerHostGuard(t *testing.T) {
	tests := []struct {
		host     string
		loopback bool
		want     int
	}{
		{"169.254.170.23", false, 200},
		{"169.254.170.23:80", false, 200},
		{"169.254.170.23:8080", false, 200},
		{"[fd00:ec2::23]", false, 200},
		{"[fd00:ec2::23]:80", false, 200},
		{"[FD00:EC2:0::23]:80", false, 200},
		{"fd00:ec2::23", false, 200},
		{"127.0.0.1", false, 403},
		{"127.0.0.1:2703", true, 200},
		{"localhost:2703", false, 403},
		{"localhost:2703", true, 200},
		{"LOCALHOST", true, 200},
		{"[::1]:80", true, 200},
		{"[::1]:80", false, 403},
		{"evil.com", false, 403},
		{"evil.com", true, 403},
		{"evil.com:80", false, 403},
		{"169.254.170.23.nip.io", false, 403},
		{"169.254.170.2", false, 403},
		{"", false, 403},
		{"[", false, 403},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			stub := &stubRetriever{creds: goldenCreds}
			h := NewHandler(HandlerConfig{Retriever: stub, AllowLoopback: tt.loopback,
				AllowedHosts: []string{"169.254.170.23", "[fd00:ec2::23]"}})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, credRequest(http.MethodGet, tt.host, podToken(t, "app")))
			if w.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			if tt.want == 403 {
				var body errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Code != "AccessDenied" {
					t.Errorf("body = %s, want code AccessDenied", w.Body)
				}
				if stub.calls != 0 {
					t.Error("rejected host reached the retriever")
				}
			}
		})
	}
}

func TestHandlerDefaultHosts(t *testing.T) {
	h := NewHandler(HandlerConfig{Retriever: &stubRetriever{creds: goldenCreds}})
	for host, want := range map[string]int{"169.254.170.23": 200, "[fd00:ec2::23]:80": 200, "localhost": 403} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, credRequest(http.MethodGet, host, podToken(t, "app")))
		if w.Code != want {
			t.Errorf("%s: status = %d, want %d", host, w.Code, want)
		}
	}
}

func TestHandlerBadRequests(t *testing.T) {
	tok := podToken(t, "app")
	huge := "a." + strings.Repeat("b", 16<<10) + ".c"
	tests := []struct {
		name      string
		method    string
		path      string
		authz     string
		want      int
		wantCode  string
		wantAllow string
		wantToken string // the token the retriever must see; "" means no call
	}{
		{name: "raw token", authz: tok, want: 200, wantToken: tok},
		{name: "bearer tolerated", authz: "Bearer " + tok, want: 200, wantToken: tok},
		{name: "lower-case bearer", authz: "bearer " + tok, want: 200, wantToken: tok},
		{name: "surrounding space", authz: "  " + tok + " ", want: 200, wantToken: tok},
		{name: "missing", want: 400, wantCode: "InvalidToken"},
		{name: "blank", authz: "   ", want: 400, wantCode: "InvalidToken"},
		{name: "bearer only", authz: "Bearer ", want: 400, wantCode: "InvalidToken"},
		{name: "garbage", authz: "hello world", want: 400, wantCode: "InvalidToken"},
		{name: "two parts", authz: "aaa.bbb", want: 400, wantCode: "InvalidToken"},
		{name: "four parts", authz: "a.b.c.d", want: 400, wantCode: "InvalidToken"},
		{name: "empty part", authz: "a..c", want: 400, wantCode: "InvalidToken"},
		{name: "not base64url", authz: "a+b.c/d.e", want: 400, wantCode: "InvalidToken"},
		{name: "huge", authz: huge, want: 400, wantCode: "InvalidToken"},
		{name: "POST", method: http.MethodPost, authz: tok, want: 405, wantCode: "MethodNotAllowed", wantAllow: "GET"},
		{name: "HEAD", method: http.MethodHead, authz: tok, want: 405, wantAllow: "GET"},
		{name: "PUT", method: http.MethodPut, authz: tok, want: 405, wantCode: "MethodNotAllowed", wantAllow: "GET"},
		{name: "root", path: "/", authz: tok, want: 404, wantCode: "NotFound"},
		{name: "trailing slash", path: "/v1/credentials/", authz: tok, want: 404, wantCode: "NotFound"},
		{name: "v2", path: "/v2/credentials", authz: tok, want: 404, wantCode: "NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := &stubRetriever{creds: goldenCreds}
			m := NewMetrics(prometheus.NewPedanticRegistry())
			h := NewHandler(HandlerConfig{Retriever: stub, Metrics: m})
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodGet
			}
			if path == "" {
				path = CredentialsPath
			}
			r := httptest.NewRequest(method, "http://169.254.170.23"+path, nil)
			if tt.authz != "" {
				r.Header.Set("Authorization", tt.authz)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			if tt.wantCode != "" {
				var body errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Code != tt.wantCode || body.Message == "" {
					t.Errorf("body = %s, want code %s and a message", w.Body, tt.wantCode)
				}
			}
			if got := w.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if tt.wantToken == "" && stub.calls != 0 {
				t.Error("bad request reached the retriever")
			}
			if tt.wantToken != "" && stub.last != tt.wantToken {
				t.Errorf("retriever got %q, want %q", stub.last, tt.wantToken)
			}
			if got := testutil.ToFloat64(m.requests.WithLabelValues(strconv.Itoa(tt.want))); got != 1 {
				t.Errorf("requests_total{code=%d} = %v, want 1", tt.want, got)
			}
		})
	}
}

func TestHandlerStatusMapping(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
		wantCode   string
	}{
		{&Error{Status: 400, Code: "InvalidTokenException", Message: "m"}, 400, "InvalidTokenException"},
		{&Error{Status: 400, Code: "ExpiredTokenException", Message: "m"}, 400, "ExpiredTokenException"},
		{&Error{Status: 403, Code: "AccessDeniedException", Message: "m"}, 403, "AccessDeniedException"},
		{&Error{Status: 404, Code: "ResourceNotFoundException", Message: "m"}, 404, "ResourceNotFoundException"},
		{&Error{Status: 429, Code: "ThrottlingException", Message: "m"}, 429, "ThrottlingException"},
		{&Error{Status: 500, Code: "InternalServerException", Message: "m"}, 500, "InternalServerException"},
		{&Error{Status: 500, Code: "AgentMisconfigured", Message: "m"}, 500, "AgentMisconfigured"},
		{&Error{Status: 503, Code: "ServiceUnavailableException", Message: "m"}, 503, "ServiceUnavailableException"},
		{errors.New("wrapped cause must not leak"), 500, "InternalServerException"},
	}
	for _, tt := range tests {
		t.Run(tt.wantCode+"_"+strconv.Itoa(tt.wantStatus), func(t *testing.T) {
			h := NewHandler(HandlerConfig{Retriever: &stubRetriever{err: tt.err}})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, credRequest(http.MethodGet, "169.254.170.23", podToken(t, "app")))
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var body errorBody
			dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if body.Code != tt.wantCode || body.Message == "" {
				t.Errorf("body = %+v, want code %s", body, tt.wantCode)
			}
			if strings.Contains(w.Body.String(), "must not leak") {
				t.Error("internal cause sent to the pod")
			}
		})
	}
}

func TestHandlerNotReady(t *testing.T) {
	ready := false
	stub := &stubRetriever{creds: goldenCreds}
	h := NewHandler(HandlerConfig{Retriever: stub, Ready: func() bool { return ready }})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, credRequest(http.MethodGet, "169.254.170.23", podToken(t, "app")))
	if w.Code != 503 || stub.calls != 0 {
		t.Errorf("not ready: status %d, calls %d; want 503 and no call", w.Code, stub.calls)
	}
	ready = true
	w = httptest.NewRecorder()
	h.ServeHTTP(w, credRequest(http.MethodGet, "169.254.170.23", podToken(t, "app")))
	if w.Code != 200 {
		t.Errorf("ready: status %d, want 200", w.Code)
	}
}

func TestHandlerLogsNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tok := podToken(t, "app")
	for _, stub := range []*stubRetriever{
		{creds: goldenCreds},
		{err: &Error{Status: 400, Code: "InvalidTokenException", Message: "signature invalid"}},
		{err: &Error{Status: 503, Code: "ServiceUnavailableException", Message: "down"}},
	} {
		h := NewHandler(HandlerConfig{Retriever: stub, Logger: log})
		h.ServeHTTP(httptest.NewRecorder(), credRequest(http.MethodGet, "169.254.170.23", tok))
		h.ServeHTTP(httptest.NewRecorder(), credRequest(http.MethodGet, "evil.com", tok))
	}
	out := buf.String()
	if !strings.Contains(out, "credential request failed") {
		t.Fatalf("no failure logged:\n%s", out)
	}
	for _, secret := range []string{tok, strings.Split(tok, ".")[1], goldenCreds.SecretAccessKey, goldenCreds.SessionToken} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q", secret)
		}
	}
}

func TestProbeHandler(t *testing.T) {
	ready := false
	h := NewProbeHandler(func() bool { return ready })
	check := func(path string, want int) {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != want {
			t.Errorf("%s: status = %d, want %d", path, w.Code, want)
		}
	}
	check("/healthz", 200)
	check("/readyz", 503)
	ready = true
	check("/readyz", 200)
	check("/metrics", 404)
	check("/", 404)
	NewProbeHandler(nil).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/readyz", nil))
}

// TestEndToEnd runs the handler, cache and remote against a fake EKS Auth
// endpoint over real HTTP, the way a pod's SDK reaches the agent.
func TestEndToEnd(t *testing.T) {
	srv := &eksAuth{t: t}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	clock := newClock()
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	remote := NewRemote(RemoteConfig{Client: newClient(ts.URL), Cluster: "demo", NodeName: "node-1",
		Sleep: (&sleepRecorder{}).Sleep, Metrics: m})
	// The canned credentials expire at 1772373600 = 2026-03-01T14:00:00Z, 2h after t0.
	cache := NewCache(CacheConfig{Next: remote, Now: clock.Now, Metrics: m})
	agent := httptest.NewServer(NewHandler(HandlerConfig{Retriever: cache, AllowLoopback: true, Metrics: m}))
	defer agent.Close()

	tok := podToken(t, "app")
	get := func() (int, map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, agent.URL+CredentialsPath, nil)
		req.Header.Set("Authorization", tok)
		resp, err := agent.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	for range 3 {
		code, body := get()
		if code != 200 || body["AccountId"] != "111122223333" || body["Expiration"] != "2026-03-01T14:00:00Z" || body["Token"] != "IQoJb3JpZ2luX2VjEXAMPLE" {
			t.Fatalf("got %d %v", code, body)
		}
	}
	if srv.Calls() != 1 {
		t.Errorf("server calls = %d, want 1", srv.Calls())
	}

	// The association is deleted: the next renewal evicts and the pod gets 404.
	srv.mu.Lock()
	srv.script = []reply{{404, "ResourceNotFoundException", ""}}
	srv.mu.Unlock()
	clock.Advance(time.Hour + 50*time.Minute)
	code, body := get()
	if code != 404 || body["code"] != "ResourceNotFoundException" {
		t.Errorf("after association deleted: %d %v, want 404 ResourceNotFoundException", code, body)
	}
	if cache.Len() != 0 {
		t.Errorf("Len = %d, want 0", cache.Len())
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("200")); got != 3 {
		t.Errorf(`requests_total{code="200"} = %v, want 3`, got)
	}
	if got := testutil.CollectAndCount(reg); got == 0 {
		t.Error("no metrics registered")
	}
	if n, err := testutil.GatherAndCount(reg, "podid_agent_cache_hits_total", "podid_agent_request_duration_seconds"); err != nil || n != 2 {
		t.Errorf("GatherAndCount = %d, %v", n, err)
	}
}
