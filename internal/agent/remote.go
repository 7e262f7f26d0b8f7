package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/podid/podid/api"
)

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// Client calls podid server, signed with an agent-scope key. It is
	// shorthand for a one-element Clients; when both are set, Client is the
	// first endpoint.
	Client *api.Client
	// Clients are the endpoints of podid server replicas, all serving the
	// same clusters. Calls are spread over the healthy ones round-robin; a
	// replica that fails is skipped for a while (see EndpointDownMin).
	Clients []*api.Client
	// Cluster is the cluster name the node belongs to.
	Cluster string
	// NodeName is sent as eksNodeName so the server can check that the token
	// belongs to a pod on this node.
	NodeName string
	// Timeout bounds one attempt; default 5s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one call, counting the first;
	// default 3, and never fewer than the number of endpoints so that each
	// gets its chance.
	MaxAttempts int
	// Backoff is the base of the jittered exponential wait between rounds of
	// attempts; default 100ms. No wait precedes an attempt on an endpoint
	// not yet tried in the call.
	Backoff time.Duration
	// EndpointDownMin is how long an endpoint that failed (unreachable,
	// timed out, 5xx) is skipped, doubling with each further failure up to
	// EndpointDownMax, jittered; after it one call probes the endpoint
	// again. Defaults 1s and 30s.
	EndpointDownMin time.Duration
	EndpointDownMax time.Duration
	// RateLimit and Burst cap calls to the server from this node, so a burst
	// of pod starts or a renewal backlog cannot flood it; default 20/s, burst 40.
	RateLimit rate.Limit
	Burst     int
	// Sleep waits for d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now defaults to time.Now; it drives the rate limiter, the endpoint
	// circuit breakers and log throttling.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// Remote is a Retriever that calls podid server's AssumeRoleForPodIdentity,
// failing over between the server's replicas.
type Remote struct {
	cfg       RemoteConfig
	limiter   *rate.Limiter
	endpoints []*endpoint

	mu                sync.Mutex
	next              int // round-robin position in endpoints
	lastMisconfigWarn time.Time
}

// endpoint is one podid server replica and its circuit breaker. The fields
// after client are guarded by Remote.mu.
type endpoint struct {
	client *api.Client
	name   string // the base URL, for logs and metrics

	failures  int       // consecutive failures; 0 means up
	downUntil time.Time // skipped until then
	probing   bool      // a call is testing the endpoint after downUntil
	// epoch counts the times the endpoint was marked down. An attempt's
	// result counts only if no other failure was recorded since it started:
	// when a replica dies, the dozens of calls in flight to it must not
	// stretch its down interval to the maximum, nor a late success from
	// before the failure reopen it.
	epoch uint64
}

// misconfigLogEvery rate-limits the log of a rejected agent key: every pod's
// request fails the same way, and one line a minute is enough to act on.
const misconfigLogEvery = time.Minute

// NewRemote returns a Remote with defaults filled in.
func NewRemote(cfg RemoteConfig) *Remote {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	if cfg.EndpointDownMin <= 0 {
		cfg.EndpointDownMin = time.Second
	}
	if cfg.EndpointDownMax < cfg.EndpointDownMin {
		cfg.EndpointDownMax = max(30*time.Second, cfg.EndpointDownMin)
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{cfg: cfg, limiter: rate.NewLimiter(cfg.RateLimit, cfg.Burst)}
	clients := cfg.Clients
	if cfg.Client != nil {
		clients = append([]*api.Client{cfg.Client}, clients...)
	}
	for _, c := range clients {
		if c == nil {
			continue
		}
		ep := &endpoint{client: c, name: endpointName(c.Endpoint)}
		r.endpoints = append(r.endpoints, ep)
		cfg.Metrics.endpointUp(ep.name, true)
	}
	r.cfg.MaxAttempts = max(cfg.MaxAttempts, len(r.endpoints))
	return r
}

// endpointName is the URL for logs and metric labels, without any user
// information it might carry.
func endpointName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retrieve exchanges token at podid server, retrying throttling, server
// failures and network errors; token and request errors are final. A failed
// attempt moves at once to an endpoint not yet tried in this call; only
// when every endpoint has been tried does it wait before the next round.
func (r *Remote) Retrieve(ctx context.Context, token string) (*Credentials, error) {
	if len(r.endpoints) == 0 {
		return nil, &Error{Status: http.StatusInternalServerError, Code: "AgentMisconfigured", Message: "the agent has no podid server client configured"}
	}
	req := api.AssumeRoleForPodIdentityRequest{Token: token, EksNodeName: r.cfg.NodeName}
	tried := make([]bool, len(r.endpoints))
	round := 0
	for attempt := 1; ; attempt++ {
		if err := r.wait(ctx); err != nil {
			return nil, err
		}
		i, epoch, probe := r.pick(tried)
		tried[i] = true
		ep := r.endpoints[i]
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		resp, err := ep.client.AssumeRoleForPodIdentity(actx, r.cfg.Cluster, req)
		cancel()
		if err == nil {
			r.record(ep, epoch, probe, outcomeUp)
			creds, cerr := convert(resp)
			if cerr != nil {
				r.cfg.Metrics.serverCall(ep.name, "InvalidResponse")
				return nil, cerr
			}
			r.cfg.Metrics.serverCall(ep.name, "")
			return creds, nil
		}
		e, metricCode, retryable, health := r.classify(ctx, err)
		r.cfg.Metrics.serverCall(ep.name, metricCode)
		r.record(ep, epoch, probe, health)
		if !retryable || attempt >= r.cfg.MaxAttempts {
			return nil, e
		}
		// Throttling is load, not a broken replica: passing it straight to
		// the next replica would only spread the overload.
		failover := health == outcomeDown && slices.Contains(tried, false)
		r.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "podid server call failed, retrying",
			slog.Int("attempt", attempt), slog.String("endpoint", ep.name), slog.Bool("failover", failover),
			slog.String("errorCode", metricCode), slog.String("error", err.Error()))
		if failover {
			continue
		}
		round++
		clear(tried)
		if r.cfg.Sleep(ctx, r.backoff(round)) != nil {
			return nil, e
		}
	}
}

// pick chooses the endpoint of the next attempt among those not yet tried
// in this call: the next up endpoint in round-robin order, or one whose down
// interval has passed and that no other call is probing (this call then
// probes it). When every untried endpoint is down, it takes the one that
// comes back soonest anyway: failing fast with all replicas marked down
// would keep the pods without credentials after the servers recover, until
// the intervals pass.
func (r *Remote) pick(tried []bool) (i int, epoch uint64, probe bool) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.endpoints)
	fallback := -1
	for k := range n {
		j := (r.next + k) % n
		if tried[j] {
			continue
		}
		ep := r.endpoints[j]
		if ep.failures == 0 || (!ep.probing && !now.Before(ep.downUntil)) {
			r.next = j + 1
			if ep.failures > 0 {
				ep.probing = true
				probe = true
			}
			return j, ep.epoch, probe
		}
		if fallback < 0 || ep.downUntil.Before(r.endpoints[fallback].downUntil) {
			fallback = j
		}
	}
	return fallback, r.endpoints[fallback].epoch, false
}

// outcome is what an attempt says about its endpoint's health.
type outcome int

const (
	outcomeUnknown outcome = iota // cancelled by the caller: says nothing
	outcomeUp
	outcomeDown
)

// record updates ep's circuit breaker with the outcome of an attempt that
// started at epoch.
func (r *Remote) record(ep *endpoint, epoch uint64, probe bool, o outcome) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if probe {
		ep.probing = false
	}
	if epoch != ep.epoch || o == outcomeUnknown {
		return
	}
	switch o {
	case outcomeUp:
		if ep.failures > 0 {
			r.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "podid server endpoint is back",
				slog.String("endpoint", ep.name), slog.Int("failures", ep.failures))
			r.cfg.Metrics.endpointUp(ep.name, true)
		}
		ep.failures = 0
		ep.downUntil = time.Time{}
	case outcomeDown:
		ep.failures++
		ep.epoch++
		d := r.downFor(ep.failures)
		ep.downUntil = now.Add(d)
		if ep.failures == 1 {
			r.cfg.Logger.LogAttrs(context.Background(), slog.LevelWarn, "podid server endpoint failed; using the others",
				slog.String("endpoint", ep.name), slog.Duration("retryIn", d))
			r.cfg.Metrics.endpointUp(ep.name, false)
		}
	}
}

// downFor is how long an endpoint is skipped after its n-th consecutive
// failure: EndpointDownMin·2^(n-1) up to EndpointDownMax, jittered to
// between half and all of it so that the agents of a fleet do not all
// probe a recovering replica at the same instant.
func (r *Remote) downFor(n int) time.Duration {
	d := min(r.cfg.EndpointDownMin<<min(n-1, 16), r.cfg.EndpointDownMax)
	half := d / 2
	return half + rand.N(d-half+1)
}

// wait takes a slot from the client-side rate limit.
func (r *Remote) wait(ctx context.Context) error {
	now := r.cfg.Now()
	res := r.limiter.ReserveN(now, 1)
	d := res.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	throttled := &Error{Status: http.StatusTooManyRequests, Code: "ThrottlingException",
		Message: "the node agent's rate limit on calls to podid server is exhausted; retry later"}
	// Waiting past the caller's deadline only holds a slot someone else could use.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		res.CancelAt(now)
		return throttled
	}
	if err := r.cfg.Sleep(ctx, d); err != nil {
		res.CancelAt(r.cfg.Now())
		throttled.Err = err
		return throttled
	}
	return nil
}

// backoff is the wait after the attempt-th failure: base·2^(attempt-1),
// jittered to between half and all of it so that nodes restarted together
// do not retry in lockstep.
func (r *Remote) backoff(attempt int) time.Duration {
	d := r.cfg.Backoff << min(attempt-1, 16)
	half := d / 2
	return half + rand.N(d-half+1)
}

// classify maps a client error to the *Error for the pod, a metrics label,
// whether another attempt may succeed and what the error says about the
// endpoint's health.
func (r *Remote) classify(ctx context.Context, err error) (e *Error, metricCode string, retryable bool, health outcome) {
	var ae *api.APIError
	if errors.As(err, &ae) {
		e, metricCode, retryable = r.classifyAPI(ctx, ae)
		if ae.StatusCode >= 500 {
			return e, metricCode, retryable, outcomeDown
		}
		// A 4xx, throttling included, is an answer: the endpoint is up.
		return e, metricCode, retryable, outcomeUp
	}
	if ctx.Err() != nil {
		// The caller gave up; another attempt would fail the same way.
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "the request was cancelled before podid server answered", Err: err}, "canceled", false, outcomeUnknown
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "podid server did not answer in time", Err: err}, "timeout", true, outcomeDown
	}
	var ue *url.Error
	var ne net.Error
	// A replica that dies while it writes the answer leaves a truncated
	// body, which surfaces as an unexpected EOF rather than a net.Error.
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "podid server is unreachable", Err: err}, "network", true, outcomeDown
	}
	// Signing failures and undecodable answers: retrying will not help.
	return &Error{Status: http.StatusInternalServerError, Code: "InternalServerException",
		Message: "the node agent could not complete the call to podid server", Err: err}, "internal", false, outcomeUnknown
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (r *Remote) classifyAPI(ctx context.Context, ae *api.APIError) (*Error, string, bool) {
	e := &Error{Code: ae.Type, Message: ae.Message, Err: ae}
	if ae.StatusCode == http.StatusForbidden || ae.StatusCode == http.StatusUnauthorized {
		// EKS Auth answers token problems (AccessDeniedException included)
		// with 400; a 403 is podid server refusing the agent's own key: a
		// bad secret, a revoked key, or a key not bound to this cluster.
		// Pods cannot fix that, so it is a 500 with a pointer for the operator.
		r.warnMisconfigured(ctx, ae)
		e.Status = http.StatusInternalServerError
		e.Code = "AgentMisconfigured"
		e.Message = fmt.Sprintf("podid server rejected the node agent's credentials (%s); the agent's key or cluster binding is misconfigured", ae.Type)
		return e, ae.Type, false
	}
	switch strings.TrimSuffix(ae.Type, "Exception") {
	case "InvalidToken", "InvalidParameter", "InvalidRequest", "ExpiredToken":
		e.Status = http.StatusBadRequest
	case "AccessDenied":
		e.Status = http.StatusForbidden
	case "ResourceNotFound":
		e.Status = http.StatusNotFound
	case "Throttling":
		e.Status = http.StatusTooManyRequests
		return e, ae.Type, true
	case "InternalServer":
		e.Status = http.StatusInternalServerError
		return e, ae.Type, true
	case "ServiceUnavailable":
		e.Status = http.StatusServiceUnavailable
		return e, ae.Type, true
	default:
		switch {
		case ae.StatusCode == http.StatusTooManyRequests:
			e.Status = http.StatusTooManyRequests
			e.Code = "ThrottlingException"
			return e, ae.Type, true
		case ae.StatusCode >= 500:
			// Proxies in front of the server answer 502/504 without an AWS
			// error name.
			e.Status = http.StatusServiceUnavailable
			e.Code = "ServiceUnavailableException"
			e.Message = fmt.Sprintf("podid server answered HTTP %d", ae.StatusCode)
			return e, ae.Type, true
		default:
			// An unknown 4xx (wrong endpoint, an older server) is the
			// agent's problem, not the pod's.
			e.Status = http.StatusInternalServerError
			e.Code = "InternalServerException"
			e.Message = fmt.Sprintf("unexpected answer from podid server: HTTP %d %s", ae.StatusCode, ae.Type)
			return e, ae.Type, false
		}
	}
	return e, ae.Type, false
}

func (r *Remote) warnMisconfigured(ctx context.Context, ae *api.APIError) {
	now := r.cfg.Now()
	r.mu.Lock()
	if !r.lastMisconfigWarn.IsZero() && now.Sub(r.lastMisconfigWarn) < misconfigLogEvery {
		r.mu.Unlock()
		return
	}
	r.lastMisconfigWarn = now
	r.mu.Unlock()
	r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "podid server rejected the agent's credentials; check the agent key and its cluster binding",
		slog.String("cluster", r.cfg.Cluster), slog.Int("status", ae.StatusCode),
		slog.String("errorType", ae.Type), slog.String("message", ae.Message))
}

// convert turns the EKS Auth response into Credentials. The account id is the
// fifth field of the assumed-role ARN (arn:aws:sts::<account>:assumed-role/...).
func convert(resp *api.AssumeRoleForPodIdentityResponse) (*Credentials, error) {
	c := resp.Credentials
	if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" || c.Expiration.Time().IsZero() {
		return nil, &Error{Status: http.StatusInternalServerError, Code: "InternalServerException",
			Message: "podid server returned incomplete credentials"}
	}
	return &Credentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		AccountID:       accountFromARN(resp.AssumedRoleUser.Arn),
		Expiration:      c.Expiration.Time().UTC(),
	}, nil
}

func accountFromARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" {
		return ""
	}
	return parts[4]
}
