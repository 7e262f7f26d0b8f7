package k8s

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/podid/podid/internal/identity"
)

// The live check asks a cluster's API server, with the TokenReview API,
// whether a token is still valid. kube-apiserver then also checks that the
// pod the token is bound to still exists with the token's pod uid, which no
// offline signature check can know: a deleted pod's token is refused at once
// rather than when it expires.
//
// Caching: a successful review is remembered for ReviewTTL (10 s by
// default), keyed by the SHA-256 of the cluster's version and the token, so
// a pod deleted within that window can still get credentials until it ends.
// A refusal is never remembered: it is final for a genuine token (a deleted
// pod stays deleted), so remembering it would only spare the API server
// replays of a dead token, and forgetting it means a spurious refusal never
// outlives the request that saw it. Failures to reach the API server are not
// remembered either; concurrent reviews of one token share one request.

// Defaults and bounds of the live check.
const (
	// DefaultReviewTTL is how long a successful TokenReview is reused.
	DefaultReviewTTL = 10 * time.Second
	// MaxReviewCacheEntries bounds the remembered reviews of one cluster.
	// When full, expired ones are dropped; if none has expired, new
	// reviews are not remembered, which costs API server calls, not
	// correctness.
	MaxReviewCacheEntries = 1 << 16
	// maxReviewSize bounds a TokenReview response. It echoes the token,
	// which is at most MaxTokenSize.
	maxReviewSize = 1 << 20
	// probeToken is what CheckKeys asks the API server to review: it is no
	// token at all, so the answer is a refusal, and any answer proves that
	// the API server is reachable and podid may create tokenreviews.
	probeToken = "podid-registration-probe"
)

// User info extras kube-apiserver sets for a pod-bound service-account token.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraNodeUID  = "authentication.kubernetes.io/node-uid"
)

// rbacHint is what an operator must grant for the live check to work.
const rbacHint = `the bearer token's identity needs "create" on tokenreviews.authentication.k8s.io (bind the ClusterRole system:auth-delegator)`

// tokenReviewRequest is an authentication.k8s.io/v1 TokenReview as sent.
type tokenReviewRequest struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Spec       tokenReviewSpec `json:"spec"`
}

type tokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

// tokenReviewResponse is the part of a TokenReview answer podid reads. The
// answer echoes spec.token, so neither it nor the raw body is ever logged.
type tokenReviewResponse struct {
	Kind   string `json:"kind"`
	Status *struct {
		Authenticated bool     `json:"authenticated"`
		User          userInfo `json:"user"`
		Audiences     []string `json:"audiences"`
		Error         string   `json:"error"`
	} `json:"status"`
}

type userInfo struct {
	Username string              `json:"username"`
	UID      string              `json:"uid"`
	Extra    map[string][]string `json:"extra"`
}

// reviewed is who the API server says a token belongs to. It is immutable
// once made, as the cache hands it to many callers.
type reviewed struct {
	Subject           string
	Audiences         []string
	Namespace         string
	ServiceAccount    string
	ServiceAccountUID string
	PodName           string
	PodUID            string
	NodeName          string
	NodeUID           string
}

type reviewEntry struct {
	who     *reviewed
	expires time.Time
}

// reviewClient is the HTTP client that trusts one cluster's CA.
type reviewClient struct {
	ca     string
	client *http.Client
	done   func()
}

// liveCheck reports whether c's tokens get a TokenReview on top of the
// signature check. An unknown LiveCheck is an error rather than no check:
// a check the operator asked for is never skipped.
func liveCheck(c *identity.Cluster) (bool, error) {
	switch c.Keys.LiveCheck {
	case "":
		return false, nil
	case identity.LiveCheckTokenReview:
		return true, nil
	}
	return false, &identity.Error{Code: identity.CodeInvalidParameter,
		Message: fmt.Sprintf("cluster %q: live check %q is not %q", c.Name, truncate(c.Keys.LiveCheck, 32), identity.LiveCheckTokenReview)}
}

// verifyByReview verifies a token of a cluster whose keys are of kind
// tokenReview: the API server is the only judge. The claims are checked
// unverified first, so tokens that cannot pass (garbage, another cluster's,
// expired) never cost an API server call; the identity then comes from the
// review, the token's times from its payload.
func (v *Verifier) verifyByReview(ctx context.Context, c *identity.Cluster, token string) (*identity.TokenClaims, error) {
	tok, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	pre, err := ValidateClaims(&tok.Claims, c.Name, c.Issuer, v.now(), v.leeway)
	if err != nil {
		return nil, err
	}
	who, err := v.review(ctx, c, token)
	if err != nil {
		return nil, err
	}
	if who.PodName == "" || who.PodUID == "" {
		return nil, invalid("the API server of cluster %q does not report the token as bound to a pod", c.Name)
	}
	if err := agree(c, who, pre); err != nil {
		return nil, err
	}
	return &identity.TokenClaims{
		Issuer:             pre.Issuer,
		Subject:            who.Subject,
		Audience:           append([]string(nil), who.Audiences...),
		ID:                 pre.ID,
		IssuedAt:           pre.IssuedAt,
		NotBefore:          pre.NotBefore,
		Expiry:             pre.Expiry,
		Namespace:          who.Namespace,
		ServiceAccountName: who.ServiceAccount,
		ServiceAccountUID:  who.ServiceAccountUID,
		PodName:            who.PodName,
		PodUID:             who.PodUID,
		NodeName:           who.NodeName,
		NodeUID:            who.NodeUID,
	}, nil
}

// agree refuses a token the API server sees as someone else than its
// claims say. It cannot happen with an honest API server and the same
// token; the check costs nothing and keeps a confused one from widening
// access.
func agree(c *identity.Cluster, who *reviewed, cl *identity.TokenClaims) error {
	if who.Namespace != cl.Namespace || who.ServiceAccount != cl.ServiceAccountName ||
		(who.PodUID != "" && who.PodUID != cl.PodUID) {
		return invalid("the API server of cluster %q sees the token as %q (pod uid %q), which disagrees with its claims",
			c.Name, truncate(who.Subject, 128), truncate(who.PodUID, 64))
	}
	return nil
}

// review returns the API server's verdict on token, from the cache when a
// recent review accepted it. Errors are *identity.Error: CodeInvalidToken
// for a refused token, CodeServiceUnavailable when the API server cannot be
// asked, CodeInternal when podid may not ask it or the cluster is
// misconfigured.
func (v *Verifier) review(ctx context.Context, c *identity.Cluster, token string) (*reviewed, error) {
	key := reviewKey(c, token)
	if who := v.cachedReview(c.Name, key, v.now()); who != nil {
		return who, nil
	}
	cl := *c // the flight may outlive the caller's view of c
	ch := v.rsf.DoChan(string(key[:]), func() (any, error) {
		if who := v.cachedReview(cl.Name, key, v.now()); who != nil {
			return who, nil
		}
		// Shared by every caller waiting on it, so not tied to the first
		// caller's context.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultFetchTimeout)
		defer cancel()
		who, err := v.postReview(fctx, &cl, token)
		if err != nil {
			return nil, err
		}
		v.rememberReview(cl.Name, key, who, v.now())
		return who, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			if identity.CodeOf(r.Err) == identity.CodeInvalidParameter {
				return nil, &identity.Error{Code: identity.CodeInternal, Message: fmt.Sprintf("cluster %q has an invalid live check configuration", c.Name), Err: r.Err}
			}
			return nil, r.Err
		}
		return r.Val.(*reviewed), nil
	case <-ctx.Done():
		return nil, &identity.Error{Code: identity.CodeServiceUnavailable, Message: "request ended while waiting for the cluster's TokenReview", Err: ctx.Err()}
	}
}

// reviewKey names a token as seen by one version of a cluster, so a review
// is never reused across clusters or after the cluster's API server changes.
func reviewKey(c *identity.Cluster, token string) [32]byte {
	h := sha256.New()
	h.Write([]byte(flightKey(c)))
	h.Write([]byte{0})
	h.Write([]byte(token))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (v *Verifier) cachedReview(cluster string, key [32]byte, now time.Time) *reviewed {
	v.rmu.Lock()
	defer v.rmu.Unlock()
	e, ok := v.reviews[cluster][key]
	if !ok || !now.Before(e.expires) {
		return nil
	}
	return e.who
}

func (v *Verifier) rememberReview(cluster string, key [32]byte, who *reviewed, now time.Time) {
	v.rmu.Lock()
	defer v.rmu.Unlock()
	m := v.reviews[cluster]
	if m == nil {
		m = make(map[[32]byte]reviewEntry)
		v.reviews[cluster] = m
	}
	if len(m) >= MaxReviewCacheEntries {
		for k, e := range m {
			if !now.Before(e.expires) {
				delete(m, k)
			}
		}
		if len(m) >= MaxReviewCacheEntries {
			return
		}
	}
	m[key] = reviewEntry{who: who, expires: now.Add(v.reviewTTL)}
}

// forgetReviews drops a cluster's remembered reviews and its HTTP client.
func (v *Verifier) forgetReviews(cluster string) {
	v.rmu.Lock()
	defer v.rmu.Unlock()
	delete(v.reviews, cluster)
	if rc := v.rclients[cluster]; rc != nil {
		rc.done()
		delete(v.rclients, cluster)
	}
}

// reviewHTTPClient returns the cluster's client, kept between reviews so
// each one does not cost a TLS handshake.
func (v *Verifier) reviewHTTPClient(c *identity.Cluster) (*http.Client, error) {
	v.rmu.Lock()
	defer v.rmu.Unlock()
	if rc := v.rclients[c.Name]; rc != nil && rc.ca == c.Keys.CACert {
		return rc.client, nil
	}
	client, done, err := v.clientFor(c.Keys.CACert)
	if err != nil {
		return nil, err
	}
	if old := v.rclients[c.Name]; old != nil {
		old.done()
	}
	v.rclients[c.Name] = &reviewClient{ca: c.Keys.CACert, client: client, done: done}
	return client, nil
}

// probeReview checks, when a cluster is registered, that its API server
// answers TokenReviews from podid. Its errors are *identity.Error with
// CodeInvalidParameter when the configuration is wrong or podid may not
// create tokenreviews, and CodeServiceUnavailable when the API server
// cannot be reached.
func (v *Verifier) probeReview(ctx context.Context, c *identity.Cluster) error {
	_, err := v.postReview(ctx, c, probeToken)
	switch identity.CodeOf(err) {
	case identity.CodeInvalidToken:
		return nil // the expected refusal
	case identity.CodeInternal:
		var ie *identity.Error
		if errors.As(err, &ie) {
			return &identity.Error{Code: identity.CodeInvalidParameter, Message: ie.Message, Err: ie.Err}
		}
	}
	if err == nil {
		return &identity.Error{Code: identity.CodeInvalidParameter,
			Message: fmt.Sprintf("the API server of cluster %q accepted a made-up token in a TokenReview; it is not a Kubernetes API server podid can rely on", c.Name)}
	}
	return err
}

// postReview sends one TokenReview of token to the cluster's API server.
func (v *Verifier) postReview(ctx context.Context, c *identity.Cluster, token string) (*reviewed, error) {
	bad := func(format string, args ...any) error {
		return &identity.Error{Code: identity.CodeInvalidParameter, Message: fmt.Sprintf("cluster %q: ", c.Name) + fmt.Sprintf(format, args...)}
	}
	base, err := url.Parse(c.Keys.URL)
	if err != nil || base.Host == "" {
		return nil, bad("API server URL %q is not an absolute URL", truncate(c.Keys.URL, 256))
	}
	shown := base.Redacted()
	if base.Scheme != "https" {
		return nil, bad("API server URL %s must use https for TokenReview", shown)
	}
	if c.Keys.BearerToken == "" {
		return nil, bad("TokenReview needs a bearer token; %s", rbacHint)
	}
	client, err := v.reviewHTTPClient(c)
	if err != nil {
		return nil, bad("%v", err)
	}
	body, err := json.Marshal(tokenReviewRequest{
		APIVersion: "authentication.k8s.io/v1",
		Kind:       "TokenReview",
		Spec:       tokenReviewSpec{Token: token, Audiences: []string{identity.Audience}},
	})
	if err != nil {
		return nil, bad("encoding TokenReview: %v", err)
	}
	endpoint := base.JoinPath("apis", "authentication.k8s.io", "v1", "tokenreviews")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return nil, bad("API server URL %s: %v", shown, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Keys.BearerToken)

	unavailable := func(format string, args ...any) error {
		return &identity.Error{Code: identity.CodeServiceUnavailable,
			Message: fmt.Sprintf("cannot check the token with the API server of cluster %q (%s): ", c.Name, shown) + fmt.Sprintf(format, args...) + "; try again later"}
	}
	resp, err := client.Do(req)
	if err != nil {
		v.log.Warn("TokenReview failed", "cluster", c.Name, "url", shown, "error", err)
		return nil, &identity.Error{Code: identity.CodeServiceUnavailable,
			Message: fmt.Sprintf("cannot reach the API server of cluster %q (%s) to check the token; try again later", c.Name, shown), Err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
	case resp.StatusCode == http.StatusUnauthorized:
		v.log.Error("TokenReview refused", "cluster", c.Name, "url", shown, "status", resp.StatusCode)
		return nil, identity.Errorf(identity.CodeInternal,
			"the API server of cluster %q does not accept podid's bearer token (HTTP 401): it may have expired; register the cluster again with a valid one; %s", c.Name, rbacHint)
	case resp.StatusCode == http.StatusForbidden:
		v.log.Error("TokenReview refused", "cluster", c.Name, "url", shown, "status", resp.StatusCode)
		return nil, identity.Errorf(identity.CodeInternal,
			"the API server of cluster %q forbids podid to create TokenReviews (HTTP 403): %s", c.Name, rbacHint)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		v.log.Warn("TokenReview failed", "cluster", c.Name, "url", shown, "status", resp.StatusCode)
		return nil, unavailable("HTTP %s", resp.Status)
	default:
		v.log.Error("TokenReview failed", "cluster", c.Name, "url", shown, "status", resp.StatusCode)
		return nil, identity.Errorf(identity.CodeInternal,
			"the API server of cluster %q answered the TokenReview with HTTP %s; check that keys.url is the API server", c.Name, resp.Status)
	}
	raw, err := readReview(resp)
	if err != nil {
		return nil, unavailable("reading the answer: %v", err)
	}
	var tr tokenReviewResponse
	if err := json.Unmarshal(raw, &tr); err != nil || tr.Status == nil {
		// Not quoting the body: it echoes the token.
		return nil, unavailable("the answer is not a TokenReview")
	}
	st := tr.Status
	if !st.Authenticated {
		reason := strings.TrimSpace(st.Error)
		if reason == "" {
			reason = "no reason given"
		}
		// Quoted from the API server; scrubbed in case an authenticator
		// echoed the token.
		reason = strings.ReplaceAll(reason, token, "<token>")
		v.log.Debug("TokenReview refused the token", "cluster", c.Name, "reason", truncate(reason, 256))
		return nil, invalid("the API server of cluster %q refused the token: %s", c.Name, truncate(reason, 256))
	}
	if !contains(st.Audiences, identity.Audience) {
		return nil, invalid("the API server of cluster %q authenticated the token but not for audience %q (it answered %s)", c.Name, identity.Audience, quoteList(st.Audiences, 4))
	}
	ns, sa, ok := splitSubject(st.User.Username)
	if !ok {
		return nil, invalid("the API server of cluster %q authenticated the token as %q, not as a service account", c.Name, truncate(st.User.Username, 128))
	}
	first := func(k string) string {
		if l := st.User.Extra[k]; len(l) > 0 {
			return l[0]
		}
		return ""
	}
	who := &reviewed{
		Subject:           st.User.Username,
		Audiences:         append([]string(nil), st.Audiences...),
		Namespace:         ns,
		ServiceAccount:    sa,
		ServiceAccountUID: st.User.UID,
		PodName:           first(ExtraPodName),
		PodUID:            first(ExtraPodUID),
		NodeName:          first(ExtraNodeName),
		NodeUID:           first(ExtraNodeUID),
	}
	v.log.Debug("TokenReview accepted the token", "cluster", c.Name, "namespace", ns, "serviceAccount", sa, "pod", who.PodName)
	return who, nil
}

func readReview(resp *http.Response) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReviewSize+1))
	switch {
	case err != nil:
		return nil, err
	case len(data) > maxReviewSize:
		return nil, fmt.Errorf("larger than %d bytes", maxReviewSize)
	}
	return data, nil
}
