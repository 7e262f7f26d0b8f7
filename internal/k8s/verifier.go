// Package k8s verifies Kubernetes projected service-account tokens against
// the signing keys of the cluster that minted them.
//
// JWT handling is our own and deliberately small: only the compact JWS form,
// only RS256 and ES256 (what kube-apiserver signs with), stdlib crypto. It is
// on the hot path of every credential request.
package k8s

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/podid/podid/internal/identity"
)

// Defaults and bounds of VerifierConfig.
const (
	DefaultLeeway          = 60 * time.Second
	MaxLeeway              = 60 * time.Second
	DefaultRefetchInterval = 30 * time.Second
	DefaultKeyTTL          = time.Hour
	// DefaultFetchTimeout bounds one fetch of remote keys, whatever the
	// HTTP client's own timeout.
	DefaultFetchTimeout = 10 * time.Second
	// MaxKeySetSize bounds a JWKS document read from a URL or a file.
	MaxKeySetSize = 1 << 20
)

// VerifierConfig configures a Verifier. The zero value is usable.
type VerifierConfig struct {
	// Now is the clock; default time.Now.
	Now func() time.Time
	// HTTPClient fetches remote keys; default a client with a 10s timeout
	// that follows only https redirects.
	// When a cluster has a CACert and the client's transport is an
	// *http.Transport (or nil), a clone of it trusting that CA is used.
	HTTPClient *http.Client
	// Leeway is the clock skew allowed on exp, nbf and iat. Zero means
	// DefaultLeeway, negative means none; it is capped at MaxLeeway.
	Leeway time.Duration
	// RefetchInterval is the minimum gap between two fetches of one
	// cluster's remote keys, so tokens with unknown kids cannot make us
	// hammer the key server. Default DefaultRefetchInterval.
	RefetchInterval time.Duration
	// KeyTTL is how long remote keys are used before they are refreshed, so
	// a key removed from the cluster stops being accepted. When the refresh
	// fails the old keys stay in use. Default DefaultKeyTTL.
	KeyTTL time.Duration
	// ReviewTTL is how long a successful TokenReview of a token is reused
	// by clusters with a live check. Default DefaultReviewTTL; refusals are
	// never reused.
	ReviewTTL time.Duration
	// Logger receives key loading events; default slog.Default().
	Logger *slog.Logger
}

// Verifier verifies projected service-account tokens. It implements
// identity.TokenVerifier and is safe for concurrent use.
type Verifier struct {
	now     func() time.Time
	client  *http.Client
	leeway  time.Duration
	refetch time.Duration
	ttl     time.Duration
	log     *slog.Logger

	mu    sync.RWMutex
	cache map[string]*keyEntry // by cluster name
	sf    singleflight.Group

	reviewTTL time.Duration
	rmu       sync.Mutex
	reviews   map[string]map[[32]byte]reviewEntry // by cluster name, then reviewKey
	rclients  map[string]*reviewClient            // by cluster name
	rsf       singleflight.Group                  // by reviewKey
}

var _ identity.TokenVerifier = (*Verifier)(nil)

// NewVerifier returns a Verifier with cfg's defaults filled in.
func NewVerifier(cfg VerifierConfig) *Verifier {
	v := &Verifier{
		now:     cfg.Now,
		client:  cfg.HTTPClient,
		leeway:  cfg.Leeway,
		refetch: cfg.RefetchInterval,
		ttl:     cfg.KeyTTL,
		log:     cfg.Logger,
		cache:   make(map[string]*keyEntry),

		reviewTTL: cfg.ReviewTTL,
		reviews:   make(map[string]map[[32]byte]reviewEntry),
		rclients:  make(map[string]*reviewClient),
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: DefaultFetchTimeout, CheckRedirect: httpsRedirectsOnly}
	}
	switch {
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	case v.leeway > MaxLeeway:
		v.leeway = MaxLeeway
	}
	if v.refetch <= 0 {
		v.refetch = DefaultRefetchInterval
	}
	if v.ttl <= 0 {
		v.ttl = DefaultKeyTTL
	}
	if v.reviewTTL <= 0 {
		v.reviewTTL = DefaultReviewTTL
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	return v
}

// httpsRedirectsOnly keeps a key server from redirecting us to plain HTTP,
// where the keys could be swapped in transit.
func httpsRedirectsOnly(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return fmt.Errorf("refusing redirect to %s: not https", req.URL.Redacted())
	}
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	return nil
}

// keyEntry is one cluster's loaded keys. Everything but attempted is
// immutable once the entry is in the cache.
type keyEntry struct {
	src        identity.KeySource
	modifiedAt time.Time
	keys       []PublicKey
	err        error // why no keys could be loaded, when keys is nil
	loadedAt   time.Time
	attempted  atomic.Int64 // UnixNano of the last load attempt
}

func (e *keyEntry) matches(c *identity.Cluster) bool {
	return e.src == c.Keys && e.modifiedAt.Equal(c.ModifiedAt)
}

func (e *keyEntry) sinceAttempt(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, e.attempted.Load()))
}

// remote reports whether the keys of a kind can change without the cluster
// changing, and so are worth refetching.
func remote(kind string) bool {
	return kind == identity.KeysJWKSFile || kind == identity.KeysJWKSURL || kind == identity.KeysKubernetes
}

// Verify checks token against the cluster's issuer and signing keys and
// returns its claims. With a live check, or keys of kind tokenReview, the
// cluster's API server must also accept the token (see tokenreview.go). See
// identity.TokenVerifier for the error contract.
func (v *Verifier) Verify(ctx context.Context, c *identity.Cluster, token string) (*identity.TokenClaims, error) {
	if c == nil {
		return nil, identity.Errorf(identity.CodeInternal, "no cluster to verify the token against")
	}
	live, err := liveCheck(c)
	if err != nil {
		return nil, &identity.Error{Code: identity.CodeInternal, Message: fmt.Sprintf("cluster %q has an invalid live check configuration", c.Name), Err: err}
	}
	if c.Keys.Kind == identity.KeysTokenReview {
		return v.verifyByReview(ctx, c, token)
	}
	tok, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	// The issuer is checked before the signature: a token from another
	// cluster then gets the message that says so, and never costs a key
	// fetch.
	if err := checkIssuer(&tok.Claims, c.Name, c.Issuer); err != nil {
		return nil, err
	}
	ent, err := v.entry(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := v.verifySignature(ctx, c, tok, ent); err != nil {
		return nil, err
	}
	claims, err := ValidateClaims(&tok.Claims, c.Name, c.Issuer, v.now(), v.leeway)
	if err != nil || !live {
		return claims, err
	}
	// Only a token that passed every offline check is worth an API server
	// call.
	who, err := v.review(ctx, c, token)
	if err != nil {
		return nil, err
	}
	if err := agree(c, who, claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// CheckKeys loads the cluster's keys now, fetching remote ones, and returns
// how many usable keys it has. It is meant for when a cluster is registered
// or updated: its errors are *identity.Error with CodeInvalidParameter for a
// bad key source and CodeServiceUnavailable for a failed fetch, with a
// message that says what is wrong. On success the keys are cached.
//
// With a live check, or keys of kind tokenReview (which have no keys: it
// returns 0), it also sends the API server a TokenReview of a made-up token,
// so a missing RBAC grant or an unreachable API server is reported now
// rather than at the first pod.
func (v *Verifier) CheckKeys(ctx context.Context, c *identity.Cluster) (int, error) {
	if c == nil {
		return 0, identity.Errorf(identity.CodeInvalidParameter, "no cluster")
	}
	live, err := liveCheck(c)
	if err != nil {
		return 0, err
	}
	if c.Keys.Kind == identity.KeysTokenReview {
		return 0, v.probeReview(ctx, c)
	}
	ent, err := v.load(ctx, c, nil, true)
	if err != nil {
		return 0, err
	}
	if live {
		if err := v.probeReview(ctx, c); err != nil {
			return 0, err
		}
	}
	return len(ent.keys), nil
}

// Forget drops the cached keys and reviews of a cluster, e.g. when it is
// deleted.
func (v *Verifier) Forget(cluster string) {
	v.mu.Lock()
	delete(v.cache, cluster)
	v.mu.Unlock()
	v.forgetReviews(cluster)
}

// entry returns the cluster's cached keys, loading them when the cache has
// none for this version of the cluster or remote keys are due a refresh.
func (v *Verifier) entry(ctx context.Context, c *identity.Cluster) (*keyEntry, error) {
	v.mu.RLock()
	ent := v.cache[c.Name]
	v.mu.RUnlock()

	if ent == nil || !ent.matches(c) {
		ent, err := v.load(ctx, c, nil, false)
		if err != nil {
			return nil, verifyLoadError(c, err)
		}
		return ent, nil
	}
	if remote(c.Keys.Kind) {
		now := v.now()
		stale := ent.err != nil || now.Sub(ent.loadedAt) >= v.ttl
		if stale && ent.sinceAttempt(now) >= v.refetch {
			fresh, err := v.load(ctx, c, ent, false)
			if fresh == nil || fresh.keys == nil {
				return nil, verifyLoadError(c, err)
			}
			// A failed refresh keeps the old keys; load has logged why.
			return fresh, nil
		}
	}
	if ent.err != nil {
		return nil, verifyLoadError(c, ent.err)
	}
	return ent, nil
}

// verifyLoadError turns a key loading error into what a token presenter is
// told: the cause stays in Err for logs.
func verifyLoadError(c *identity.Cluster, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &identity.Error{Code: identity.CodeServiceUnavailable, Message: "request ended while loading signing keys", Err: err}
	}
	if identity.CodeOf(err) == identity.CodeInvalidParameter {
		return &identity.Error{Code: identity.CodeInternal, Message: fmt.Sprintf("cluster %q has an invalid signing key source", c.Name), Err: err}
	}
	return &identity.Error{Code: identity.CodeServiceUnavailable, Message: fmt.Sprintf("signing keys of cluster %q cannot be loaded; try again later", c.Name), Err: err}
}

// load fetches the cluster's keys, at most once at a time per cluster
// version. stale is the entry the caller found wanting (nil for none): if
// another caller has replaced it meanwhile, or it was attempted within the
// refetch interval, no fetch is made. force (CheckKeys) always fetches.
//
// A failed fetch that has stale keys to fall back on returns them with the
// error; one that has none caches the failure for the refetch interval, so a
// dead key server is not hit on every request.
func (v *Verifier) load(ctx context.Context, c *identity.Cluster, stale *keyEntry, force bool) (*keyEntry, error) {
	key := flightKey(c)
	if force {
		key += "\x00force"
	}
	cl := *c // the flight may outlive the caller's view of c
	ch := v.sf.DoChan(key, func() (any, error) {
		now := v.now()
		if !force {
			v.mu.RLock()
			cur := v.cache[cl.Name]
			v.mu.RUnlock()
			if cur != nil && cur.matches(&cl) && cur != stale {
				return cur, nil
			}
			if stale != nil && cur == stale && stale.sinceAttempt(now) < v.refetch {
				return stale, nil
			}
		}

		// The fetch is shared by every caller waiting on it, so it must not
		// die with the first caller's context; DefaultFetchTimeout bounds it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultFetchTimeout)
		defer cancel()
		keys, skipped, err := v.fetch(fctx, &cl)
		for _, s := range skipped {
			v.log.Warn("skipping unusable signing key", "cluster", cl.Name, "source", cl.Keys, "reason", s)
		}
		if err != nil {
			v.log.Warn("cannot load signing keys", "cluster", cl.Name, "source", cl.Keys, "error", err)
			if force {
				return nil, err
			}
			if stale != nil && stale.keys != nil {
				stale.attempted.Store(now.UnixNano())
				return stale, err
			}
			ne := &keyEntry{src: cl.Keys, modifiedAt: cl.ModifiedAt, err: err}
			ne.attempted.Store(now.UnixNano())
			v.store(&cl, ne)
			return ne, err
		}
		v.log.Debug("loaded signing keys", "cluster", cl.Name, "source", cl.Keys, "keys", len(keys))
		ne := &keyEntry{src: cl.Keys, modifiedAt: cl.ModifiedAt, keys: keys, loadedAt: now}
		ne.attempted.Store(now.UnixNano())
		if stale != nil {
			// Late callers still holding stale must see it as just tried.
			stale.attempted.Store(now.UnixNano())
		}
		v.store(&cl, ne)
		return ne, nil
	})
	select {
	case r := <-ch:
		ent, _ := r.Val.(*keyEntry)
		if r.Err == nil && ent != nil && ent.keys == nil {
			// Another caller's failure, cached for the refetch interval.
			return ent, ent.err
		}
		return ent, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// store caches ent unless the cache already holds a newer version of the
// cluster, as can happen when an update races a slow fetch.
func (v *Verifier) store(c *identity.Cluster, ent *keyEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.cache[c.Name]; cur != nil && cur.modifiedAt.After(c.ModifiedAt) {
		return
	}
	v.cache[c.Name] = ent
}

// flightKey names one version of a cluster's key source, so callers holding
// different versions never share a fetch.
func flightKey(c *identity.Cluster) string {
	h := sha256.New()
	for _, s := range []string{c.Keys.Kind, c.Keys.JWKS, c.Keys.Path, c.Keys.URL, c.Keys.BearerToken, c.Keys.CACert, c.Keys.PEM, c.Keys.LiveCheck} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return c.Name + "\x00" + strconv.FormatInt(c.ModifiedAt.UnixNano(), 10) + "\x00" + hex.EncodeToString(h.Sum(nil))
}

// verifySignature finds the keys that may have signed tok and checks them.
// A token whose kid no cached key carries triggers one rate-limited refetch
// of remote keys: that is how a key rotation reaches us.
func (v *Verifier) verifySignature(ctx context.Context, c *identity.Cluster, tok *Token, ent *keyEntry) error {
	ok, kidKnown, tried := tryKeys(tok, ent.keys)
	if ok {
		return nil
	}
	if !kidKnown && remote(c.Keys.Kind) && ent.sinceAttempt(v.now()) >= v.refetch {
		v.log.Info("refetching signing keys", "cluster", c.Name, "reason", "no cached key verifies the token", "kid", truncate(tok.KeyID, 64))
		fresh, err := v.load(ctx, c, ent, false)
		if err != nil {
			return &identity.Error{
				Code:    identity.CodeServiceUnavailable,
				Message: fmt.Sprintf("token key %q is not among the cached signing keys of cluster %q, and refreshing them failed; try again later", truncate(tok.KeyID, 64), c.Name),
				Err:     err,
			}
		}
		if fresh != ent {
			if ok, kidKnown, tried = tryKeys(tok, fresh.keys); ok {
				return nil
			}
		}
	}
	switch {
	case kidKnown || (tok.KeyID == "" && tried > 0):
		return invalid("token signature is not valid for the signing keys of cluster %q", c.Name)
	case tried > 0:
		return invalid("token key %q is not among the signing keys of cluster %q, and no key without a kid verifies it", truncate(tok.KeyID, 64), c.Name)
	case tok.KeyID != "":
		return invalid("token key %q (%s) is not among the signing keys of cluster %q", truncate(tok.KeyID, 64), tok.Alg, c.Name)
	default:
		return invalid("cluster %q has no %s signing key", c.Name, tok.Alg)
	}
}

// tryKeys verifies tok with each key that may have signed it: those with its
// kid, and those without a kid (PEM keys), which match any. kidKnown reports
// whether some key carried the token's kid.
func tryKeys(tok *Token, keys []PublicKey) (ok, kidKnown bool, tried int) {
	for _, k := range keys {
		if !k.Supports(tok.Alg) {
			continue
		}
		if tok.KeyID != "" && k.KeyID != "" && k.KeyID != tok.KeyID {
			continue
		}
		if tok.KeyID != "" && k.KeyID == tok.KeyID {
			kidKnown = true
		}
		tried++
		if tok.VerifySignature(k) == nil {
			return true, kidKnown, tried
		}
	}
	return false, kidKnown, tried
}

// fetch loads the keys of c's key source. Errors are *identity.Error:
// CodeInvalidParameter when the source itself is wrong,
// CodeServiceUnavailable when a remote source cannot be read.
func (v *Verifier) fetch(ctx context.Context, c *identity.Cluster) ([]PublicKey, []string, error) {
	src := c.Keys
	bad := func(format string, args ...any) error {
		return &identity.Error{Code: identity.CodeInvalidParameter, Message: fmt.Sprintf("cluster %q: ", c.Name) + fmt.Sprintf(format, args...)}
	}
	switch src.Kind {
	case identity.KeysJWKS:
		keys, skipped, err := parseJWKS([]byte(src.JWKS))
		if err != nil {
			return nil, skipped, bad("inline JWKS: %v", err)
		}
		return keys, skipped, nil
	case identity.KeysPEM:
		keys, err := ParsePEMKeys([]byte(src.PEM))
		if err != nil {
			return nil, nil, bad("PEM keys: %v", err)
		}
		return keys, nil, nil
	case identity.KeysJWKSFile:
		data, err := readFile(src.Path)
		if err != nil {
			return nil, nil, bad("JWKS file: %v", err)
		}
		keys, skipped, err := parseJWKS(data)
		if err != nil {
			return nil, skipped, bad("JWKS file %q: %v", src.Path, err)
		}
		return keys, skipped, nil
	case identity.KeysJWKSURL:
		return v.fetchURL(ctx, c, src.URL, "")
	case identity.KeysKubernetes:
		base, err := url.Parse(src.URL)
		if err != nil || base.Host == "" {
			return nil, nil, bad("API server URL %q is not an absolute URL", src.URL)
		}
		return v.fetchURL(ctx, c, base.JoinPath("openid", "v1", "jwks").String(), src.BearerToken)
	case "":
		return nil, nil, bad("no key source kind")
	default:
		return nil, nil, bad("unknown key source kind %q", src.Kind)
	}
}

func readFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no path")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f)
}

func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxKeySetSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxKeySetSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxKeySetSize)
	}
	return data, nil
}

// fetchURL GETs a JWKS over HTTPS, with bearer (if set) as the
// Authorization and the cluster's CACert (if set) as the trusted roots.
func (v *Verifier) fetchURL(ctx context.Context, c *identity.Cluster, rawURL, bearer string) ([]PublicKey, []string, error) {
	bad := func(format string, args ...any) error {
		return &identity.Error{Code: identity.CodeInvalidParameter, Message: fmt.Sprintf("cluster %q: ", c.Name) + fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, nil, bad("key URL %q is not an absolute URL", rawURL)
	}
	shown := u.Redacted()
	if u.Scheme != "https" {
		return nil, nil, bad("key URL %s must use https", shown)
	}
	client, done, err := v.clientFor(c.Keys.CACert)
	if err != nil {
		return nil, nil, bad("%v", err)
	}
	defer done()

	unavailable := func(format string, args ...any) error {
		return &identity.Error{Code: identity.CodeServiceUnavailable,
			Message: fmt.Sprintf("cannot fetch signing keys of cluster %q from %s: ", c.Name, shown) + fmt.Sprintf(format, args...)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, bad("key URL %s: %v", shown, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, unavailable("%v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (check that the bearer token is valid and may get /openid/v1/jwks)"
		}
		return nil, nil, unavailable("HTTP %s%s", resp.Status, hint)
	}
	data, err := readLimited(resp.Body)
	if err != nil {
		return nil, nil, unavailable("reading response: %v", err)
	}
	keys, skipped, err := parseJWKS(data)
	if err != nil {
		return nil, skipped, unavailable("%v", err)
	}
	return keys, skipped, nil
}

// clientFor returns the HTTP client for a cluster: the configured one, or a
// copy whose transport trusts only caCert. done releases its connections;
// fetches are rare, so a per-fetch transport costs nothing that matters.
func (v *Verifier) clientFor(caCert string) (*http.Client, func(), error) {
	if caCert == "" {
		return v.client, func() {}, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caCert)) {
		return nil, nil, errors.New("caCert holds no PEM certificate")
	}
	base := v.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	t, ok := base.(*http.Transport)
	if !ok {
		// A custom RoundTripper owns its TLS settings; we cannot add the CA.
		return v.client, func() {}, nil
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	t.TLSClientConfig.RootCAs = pool
	if t.TLSClientConfig.MinVersion < tls.VersionTLS12 {
		t.TLSClientConfig.MinVersion = tls.VersionTLS12
	}
	client := *v.client
	client.Transport = t
	return &client, t.CloseIdleConnections, nil
}
