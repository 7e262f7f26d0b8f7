package k8s

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authv1 "k8s.io/api/authentication/v1"

	"github.com/podid/podid/internal/identity"
)

const reviewerToken = "podid-reviewer-token"

// livePod is a pod the emulated API server knows.
type livePod struct {
	Namespace, ServiceAccount, ServiceAccountUID string
	Name, UID, NodeName, NodeUID                 string
}

// apiServer emulates kube-apiserver's TokenReview endpoint with the real
// k8s.io/api types: it authenticates a token when the pod it is bound to
// (by uid) is one it knows, and otherwise answers as kube-apiserver does
// for a deleted pod.
type apiServer struct {
	*httptest.Server
	t       testing.TB
	reviews atomic.Int32

	mu     sync.Mutex
	pods   map[string]livePod // by uid
	status int                // when set, every review gets this HTTP status
	edit   func(*authv1.TokenReviewStatus)
}

func newAPIServer(t testing.TB, pods ...livePod) *apiServer {
	t.Helper()
	s := &apiServer{t: t, pods: map[string]livePod{}}
	for _, p := range pods {
		s.pods[p.UID] = p
	}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) serve(w http.ResponseWriter, r *http.Request) {
	s.reviews.Add(1)
	s.mu.Lock()
	status, edit := s.status, s.edit
	pods := make(map[string]livePod, len(s.pods))
	for k, v := range s.pods {
		pods[k] = v
	}
	s.mu.Unlock()

	if r.Header.Get("Authorization") != "Bearer "+reviewerToken {
		http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	// The request shape kube-apiserver needs.
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Content-Type") != "application/json" {
		s.t.Errorf("review request %s %s (Content-Type %q), want POST /apis/authentication.k8s.io/v1/tokenreviews as JSON", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var tr authv1.TokenReview
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil {
		s.t.Errorf("review request body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if tr.APIVersion != "authentication.k8s.io/v1" || tr.Kind != "TokenReview" || tr.Spec.Token == "" ||
		!cmp.Equal(tr.Spec.Audiences, []string{identity.Audience}) {
		s.t.Errorf("review request %s/%s audiences %q, token empty %v", tr.APIVersion, tr.Kind, tr.Spec.Audiences, tr.Spec.Token == "")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	tr.Status = s.authenticate(tr.Spec.Token, pods)
	if edit != nil {
		edit(&tr.Status)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(&tr) // echoing spec.token, as kube-apiserver does
}

func (s *apiServer) authenticate(token string, pods map[string]livePod) authv1.TokenReviewStatus {
	var claims struct {
		Sub string `json:"sub"`
		K8s struct {
			Pod struct{ Name, UID string } `json:"pod"`
		} `json:"kubernetes.io"`
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return authv1.TokenReviewStatus{Error: "[invalid bearer token, token lookup failed]"}
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		return authv1.TokenReviewStatus{Error: "[invalid bearer token, square/go-jose: error in cryptographic primitive]"}
	}
	p, ok := pods[claims.K8s.Pod.UID]
	if !ok {
		return authv1.TokenReviewStatus{Error: fmt.Sprintf("[invalid bearer token, pods %q not found]", claims.K8s.Pod.Name)}
	}
	user := "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount
	if claims.Sub != user {
		return authv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has been invalidated]"}
	}
	return authv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{identity.Audience},
		User: authv1.UserInfo{
			Username: user,
			UID:      p.ServiceAccountUID,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + p.Namespace, "system:authenticated"},
			Extra: map[string]authv1.ExtraValue{
				ExtraPodName:  {p.Name},
				ExtraPodUID:   {p.UID},
				ExtraNodeName: {p.NodeName},
				ExtraNodeUID:  {p.NodeUID},
				"authentication.kubernetes.io/credential-id": {"JTI=jti-1"},
			},
		},
	}
}

func (s *apiServer) set(f func(s *apiServer)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *apiServer) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
}

// checkoutPod is the pod podClaims binds tokens to, as the API server
// knows it. Its service account uid and node differ from the token's on
// purpose, so a test can tell which side claims came from.
var checkoutPod = livePod{Namespace: "shop", ServiceAccount: "checkout", ServiceAccountUID: "sa-uid-from-review",
	Name: "checkout-1", UID: "pod-uid", NodeName: "node-from-review", NodeUID: "node-uid-from-review"}

// deletedPod binds claims to a pod the API server does not know.
func deletedPod(m map[string]any) {
	k8sClaim(m)["pod"] = map[string]any{"name": "checkout-0", "uid": "deleted-pod-uid"}
}

// liveCluster is a cluster whose keys are key's, with the live check on
// against srv.
func liveCluster(srv *apiServer, key testKey) *identity.Cluster {
	return &identity.Cluster{Name: "live", Issuer: "https://live.test", ModifiedAt: t0, Keys: identity.KeySource{
		Kind: identity.KeysJWKS, JWKS: keySetOf(key), LiveCheck: identity.LiveCheckTokenReview,
		URL: srv.URL, BearerToken: reviewerToken, CACert: srv.caPEM(),
	}}
}

func reviewOnlyCluster(srv *apiServer) *identity.Cluster {
	return &identity.Cluster{Name: "review", Issuer: "https://live.test", ModifiedAt: t0, Keys: identity.KeySource{
		Kind: identity.KeysTokenReview, URL: srv.URL, BearerToken: reviewerToken, CACert: srv.caPEM(),
	}}
}

func keySetOf(k testKey) string {
	b, _ := json.Marshal(map[string]any{"keys": []any{k.jwk()}})
	return string(b)
}

// logBuffer collects everything the verifier logs, at debug level.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLiveCheck(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	srv := newAPIServer(t, checkoutPod)
	logs := &logBuffer{}
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	live := liveCluster(srv, key)
	offline := *live
	offline.Keys.LiveCheck = ""
	alone := reviewOnlyCluster(srv)
	other := testKey{kid: "k1", priv: rsaKey(t, 1)}

	// What the JWKS verifier returns for the live pod's token.
	fromToken := &identity.TokenClaims{
		Issuer: "https://live.test", Subject: "system:serviceaccount:shop:checkout", Audience: []string{identity.Audience}, ID: "jti-1",
		IssuedAt: t0.UTC(), NotBefore: t0.UTC(), Expiry: t0.Add(time.Hour).UTC(),
		Namespace: "shop", ServiceAccountName: "checkout", ServiceAccountUID: "sa-uid",
		PodName: "checkout-1", PodUID: "pod-uid", NodeName: "node-1", NodeUID: "node-uid",
	}
	// What kind tokenReview returns: identity from status.user, times
	// from the token.
	fromReview := *fromToken
	fromReview.ServiceAccountUID, fromReview.NodeName, fromReview.NodeUID = "sa-uid-from-review", "node-from-review", "node-uid-from-review"

	tests := []struct {
		name        string
		cluster     *identity.Cluster
		token       string
		want        *identity.TokenClaims
		wantCode    identity.Code
		wantMsg     string
		wantReviews int32
	}{
		{name: "on top: live pod", cluster: live, token: key.sign(t, podClaims(live.Issuer, t0)), want: fromToken, wantReviews: 1},
		{name: "JWKS alone accepts the deleted pod's token", cluster: &offline, token: key.sign(t, podClaims(live.Issuer, t0, deletedPod)),
			want: func() *identity.TokenClaims {
				c := *fromToken
				c.PodName, c.PodUID = "checkout-0", "deleted-pod-uid"
				return &c
			}()},
		{name: "on top: deleted pod", cluster: live, token: key.sign(t, podClaims(live.Issuer, t0, deletedPod)),
			wantCode: identity.CodeInvalidToken, wantMsg: `the API server of cluster "live" refused the token: [invalid bearer token, pods "checkout-0" not found]`, wantReviews: 1},
		{name: "on top: bad signature is refused offline", cluster: live, token: other.sign(t, podClaims(live.Issuer, t0)),
			wantCode: identity.CodeInvalidToken, wantMsg: "signature is not valid"},
		{name: "on top: expired is refused offline", cluster: live, token: key.sign(t, podClaims(live.Issuer, t0.Add(-2*time.Hour))),
			wantCode: identity.CodeExpiredToken},
		{name: "alone: live pod, claims from status.user", cluster: alone, token: key.sign(t, podClaims(live.Issuer, t0)), want: &fromReview, wantReviews: 1},
		{name: "alone: deleted pod", cluster: alone, token: key.sign(t, podClaims(live.Issuer, t0, deletedPod)),
			wantCode: identity.CodeInvalidToken, wantMsg: `pods "checkout-0" not found`, wantReviews: 1},
		{name: "alone: garbage never reaches the API server", cluster: alone, token: "not-a-jwt",
			wantCode: identity.CodeInvalidToken, wantMsg: "not a JWT"},
		{name: "alone: another issuer never reaches the API server", cluster: alone, token: key.sign(t, podClaims("https://elsewhere.test", t0)),
			wantCode: identity.CodeInvalidToken, wantMsg: "does not match"},
		{name: "alone: expired never reaches the API server", cluster: alone, token: key.sign(t, podClaims(live.Issuer, t0.Add(-2*time.Hour))),
			wantCode: identity.CodeExpiredToken},
		{name: "alone: a token the API server sees as another account", cluster: alone,
			token: key.sign(t, podClaims(live.Issuer, t0, func(m map[string]any) {
				m["sub"] = "system:serviceaccount:shop:admin"
				k8sClaim(m)["serviceaccount"] = map[string]any{"name": "admin", "uid": "x"}
			})),
			wantCode: identity.CodeInvalidToken, wantMsg: "service account token has been invalidated", wantReviews: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.reviews.Load()
			got, err := v.Verify(context.Background(), tt.cluster, tt.token)
			if n := srv.reviews.Load() - before; n != tt.wantReviews {
				t.Errorf("%d TokenReviews, want %d", n, tt.wantReviews)
			}
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("claims (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", got)
			}
			if c := codeOf(t, err); c != tt.wantCode {
				t.Errorf("code %v, want %v: %v", c, tt.wantCode, err)
			}
			if !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", errMessage(err), tt.wantMsg)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Error("the error quotes the token")
			}
		})
	}
	for _, tt := range tests {
		if tt.token != "not-a-jwt" && strings.Contains(logs.String(), tt.token) {
			t.Errorf("the logs hold the token of %q", tt.name)
		}
	}
	if strings.Contains(logs.String(), reviewerToken) {
		t.Error("the logs hold the bearer token")
	}
}

func TestLiveCheckAnswers(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	token := key.sign(t, podClaims("https://live.test", t0))
	tests := []struct {
		name     string
		status   int
		edit     func(*authv1.TokenReviewStatus)
		bearer   string
		wantCode identity.Code
		wantMsg  string
		// cached: the API server accepted the token, so its answer is
		// remembered, but podid refuses it each time.
		cached bool
	}{
		{name: "403: RBAC missing", status: http.StatusForbidden, wantCode: identity.CodeInternal,
			wantMsg: `forbids podid to create TokenReviews (HTTP 403): the bearer token's identity needs "create" on tokenreviews.authentication.k8s.io (bind the ClusterRole system:auth-delegator)`},
		{name: "401: bearer token refused", bearer: "expired-reviewer-token", wantCode: identity.CodeInternal, wantMsg: "system:auth-delegator"},
		{name: "500", status: http.StatusInternalServerError, wantCode: identity.CodeServiceUnavailable, wantMsg: "HTTP 500"},
		{name: "503", status: http.StatusServiceUnavailable, wantCode: identity.CodeServiceUnavailable, wantMsg: "try again later"},
		{name: "429", status: http.StatusTooManyRequests, wantCode: identity.CodeServiceUnavailable, wantMsg: "HTTP 429"},
		{name: "404: not an API server", status: http.StatusNotFound, wantCode: identity.CodeInternal, wantMsg: "check that keys.url is the API server"},
		{name: "200 with no status", status: http.StatusOK, wantCode: identity.CodeServiceUnavailable, wantMsg: "not a TokenReview"},
		{name: "authenticated for no audience", edit: func(s *authv1.TokenReviewStatus) { s.Audiences = nil },
			wantCode: identity.CodeInvalidToken, wantMsg: `not for audience "pods.eks.amazonaws.com"`},
		{name: "authenticated as a user", edit: func(s *authv1.TokenReviewStatus) { s.User.Username = "alice@example.com" },
			wantCode: identity.CodeInvalidToken, wantMsg: `as "alice@example.com", not as a service account`},
		{name: "authenticated as another pod", edit: func(s *authv1.TokenReviewStatus) { s.User.Extra[ExtraPodUID] = authv1.ExtraValue{"other-uid"} },
			wantCode: identity.CodeInvalidToken, wantMsg: "disagrees with its claims", cached: true},
		{name: "refusal echoing the token is scrubbed", edit: func(s *authv1.TokenReviewStatus) {
			*s = authv1.TokenReviewStatus{Error: "webhook refused " + token}
		}, wantCode: identity.CodeInvalidToken, wantMsg: "webhook refused <token>"},
		{name: "refusal with no reason", edit: func(s *authv1.TokenReviewStatus) { *s = authv1.TokenReviewStatus{} },
			wantCode: identity.CodeInvalidToken, wantMsg: "refused the token: no reason given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAPIServer(t, checkoutPod)
			srv.set(func(s *apiServer) { s.status, s.edit = tt.status, tt.edit })
			c := liveCluster(srv, key)
			if tt.bearer != "" {
				c.Keys.BearerToken = tt.bearer
			}
			v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
			got, err := v.Verify(context.Background(), c, token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", got)
			}
			if code := codeOf(t, err); code != tt.wantCode {
				t.Errorf("code %v, want %v: %v", code, tt.wantCode, err)
			}
			if !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", errMessage(err), tt.wantMsg)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), c.Keys.BearerToken) {
				t.Error("the error quotes a token")
			}
			// Refusals and failures are not remembered: the next request
			// asks again.
			before := srv.reviews.Load()
			_, err = v.Verify(context.Background(), c, token)
			if err == nil || codeOf(t, err) != tt.wantCode {
				t.Errorf("second try: %v, want code %v", err, tt.wantCode)
			}
			if asked := srv.reviews.Load() != before; asked == tt.cached {
				t.Errorf("second try asked the API server: %v, want %v", asked, !tt.cached)
			}
		})
	}
}

func TestLiveCheckUnreachable(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	srv := newAPIServer(t, checkoutPod)
	c := liveCluster(srv, key)
	srv.Close() // the API server is gone; the check must not be skipped
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	for _, cl := range []*identity.Cluster{c, reviewOnlyCluster(srv)} {
		_, err := v.Verify(context.Background(), cl, key.sign(t, podClaims(c.Issuer, t0)))
		if err == nil || codeOf(t, err) != identity.CodeServiceUnavailable || !strings.Contains(errMessage(err), "cannot reach the API server") {
			t.Errorf("%s: Verify error = %v, want ServiceUnavailable", cl.Keys.Kind, err)
		}
	}

	// A cancelled request is told so, not left waiting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, c, key.sign(t, podClaims(c.Issuer, t0)))
	if err == nil || codeOf(t, err) != identity.CodeServiceUnavailable {
		t.Errorf("cancelled: Verify error = %v, want ServiceUnavailable", err)
	}
}

func TestLiveCheckConfig(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	srv := newAPIServer(t, checkoutPod)
	token := key.sign(t, podClaims("https://live.test", t0))
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})
	for _, tt := range []struct {
		name    string
		edit    func(k *identity.KeySource)
		wantMsg string
	}{
		{name: "unknown live check", edit: func(k *identity.KeySource) { k.LiveCheck = "sometimes" }, wantMsg: "invalid live check configuration"},
		{name: "plain http", edit: func(k *identity.KeySource) { k.URL = strings.Replace(k.URL, "https:", "http:", 1) }, wantMsg: "invalid live check configuration"},
		{name: "no bearer token", edit: func(k *identity.KeySource) { k.BearerToken = "" }, wantMsg: "invalid live check configuration"},
		{name: "CA is no certificate", edit: func(k *identity.KeySource) { k.CACert = "junk" }, wantMsg: "invalid live check configuration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := liveCluster(srv, key)
			tt.edit(&c.Keys)
			before := srv.reviews.Load()
			_, err := v.Verify(context.Background(), c, token)
			if err == nil || codeOf(t, err) != identity.CodeInternal || !strings.Contains(errMessage(err), tt.wantMsg) {
				t.Errorf("Verify error = %v, want Internal %q", err, tt.wantMsg)
			}
			if srv.reviews.Load() != before {
				t.Error("a misconfigured check reached the API server")
			}
			if _, err := v.CheckKeys(context.Background(), c); err == nil || codeOf(t, err) != identity.CodeInvalidParameter {
				t.Errorf("CheckKeys error = %v, want InvalidParameter", err)
			}
		})
	}
}

func TestLiveCheckCache(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	srv := newAPIServer(t, checkoutPod)
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, Logger: discardLogger()})
	ctx := context.Background()
	for _, c := range []*identity.Cluster{liveCluster(srv, key), reviewOnlyCluster(srv)} {
		t.Run(c.Keys.Kind, func(t *testing.T) {
			clock.Advance(time.Minute) // past every review of the previous run
			token := key.sign(t, podClaims(c.Issuer, clock.Now()))
			reviews := func() int32 { return srv.reviews.Load() }
			start := reviews()
			expect := func(what string, want int32) {
				t.Helper()
				if got := reviews() - start; got != want {
					t.Fatalf("%s: %d TokenReviews in all, want %d", what, got, want)
				}
			}
			verify := func(c *identity.Cluster, token string) error {
				_, err := v.Verify(ctx, c, token)
				return err
			}

			// Concurrent requests for one token share one review.
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for range 20 {
				wg.Go(func() { errs <- verify(c, token) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			expect("20 concurrent requests", 1)

			clock.Advance(DefaultReviewTTL - time.Second)
			if err := verify(c, token); err != nil {
				t.Fatal(err)
			}
			expect("within the TTL", 1)

			clock.Advance(time.Second)
			if err := verify(c, token); err != nil {
				t.Fatal(err)
			}
			expect("at the TTL", 2)

			// Another token of the same pod has its own review.
			if err := verify(c, key.sign(t, podClaims(c.Issuer, clock.Now(), func(m map[string]any) { m["jti"] = "jti-2" }))); err != nil {
				t.Fatal(err)
			}
			expect("another token", 3)

			// The pod is deleted: the remembered review still admits its
			// token until the TTL ends, then the token is refused, every
			// time.
			srv.set(func(s *apiServer) { delete(s.pods, checkoutPod.UID) })
			t.Cleanup(func() { srv.set(func(s *apiServer) { s.pods[checkoutPod.UID] = checkoutPod }) })
			if err := verify(c, token); err != nil {
				t.Fatalf("within the TTL of the last review: %v", err)
			}
			clock.Advance(DefaultReviewTTL)
			for i := range 2 {
				if err := verify(c, token); codeOf(t, err) != identity.CodeInvalidToken {
					t.Fatalf("deleted pod, try %d: %v", i, err)
				}
			}
			expect("refusals are not remembered", 5)
			srv.set(func(s *apiServer) { s.pods[checkoutPod.UID] = checkoutPod })

			// A changed cluster, or a forgotten one, asks again.
			if err := verify(c, token); err != nil {
				t.Fatal(err)
			}
			upd := *c
			upd.ModifiedAt = upd.ModifiedAt.Add(time.Second)
			if err := verify(&upd, token); err != nil {
				t.Fatal(err)
			}
			expect("updated cluster", 7)
			v.Forget(c.Name)
			if err := verify(c, token); err != nil {
				t.Fatal(err)
			}
			expect("forgotten cluster", 8)
		})
	}
}

func TestLiveCheckReviewTTL(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	srv := newAPIServer(t, checkoutPod)
	clock := newClock(t0)
	v := NewVerifier(VerifierConfig{Now: clock.Now, ReviewTTL: time.Second, Logger: discardLogger()})
	c := liveCluster(srv, key)
	token := key.sign(t, podClaims(c.Issuer, t0))
	for i := range 3 {
		if _, err := v.Verify(context.Background(), c, token); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		if got := srv.reviews.Load(); got != int32(i+1) {
			t.Fatalf("after %d requests a second apart: %d reviews", i+1, got)
		}
	}
}

func TestLiveCheckRegistration(t *testing.T) {
	key := testKey{kid: "k1", priv: rsaKey(t, 0)}
	ctx := context.Background()
	v := NewVerifier(VerifierConfig{Now: func() time.Time { return t0 }, Logger: discardLogger()})

	srv := newAPIServer(t, checkoutPod)
	n, err := v.CheckKeys(ctx, reviewOnlyCluster(srv))
	if err != nil || n != 0 {
		t.Errorf("tokenReview kind: CheckKeys = %d, %v; want 0, nil", n, err)
	}
	n, err = v.CheckKeys(ctx, liveCluster(srv, key))
	if err != nil || n != 1 {
		t.Errorf("jwks with live check: CheckKeys = %d, %v; want 1, nil", n, err)
	}
	if got := srv.reviews.Load(); got != 2 {
		t.Errorf("%d probe reviews, want 2", got)
	}

	for _, tt := range []struct {
		name     string
		status   int
		closed   bool
		wantCode identity.Code
		wantMsg  string
	}{
		{name: "RBAC missing", status: http.StatusForbidden, wantCode: identity.CodeInvalidParameter, wantMsg: "system:auth-delegator"},
		{name: "API server down", closed: true, wantCode: identity.CodeServiceUnavailable, wantMsg: "cannot reach the API server"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAPIServer(t)
			srv.set(func(s *apiServer) { s.status = tt.status })
			if tt.closed {
				srv.Close()
			}
			for _, c := range []*identity.Cluster{reviewOnlyCluster(srv), liveCluster(srv, key)} {
				_, err := v.CheckKeys(ctx, c)
				if err == nil || codeOf(t, err) != tt.wantCode || !strings.Contains(errMessage(err), tt.wantMsg) {
					t.Errorf("%s: CheckKeys error = %v, want %v %q", c.Keys.Kind, err, tt.wantCode, tt.wantMsg)
				}
			}
		})
	}
}
