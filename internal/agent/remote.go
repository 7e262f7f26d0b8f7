package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/podid/podid/api"
)

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// Client calls podid server, signed with an agent-scope key.
	Client *api.Client
	// Cluster is the cluster name the node belongs to.
	Cluster string
	// NodeName is sent as eksNodeName so the server can check that the token
	// belongs to a pod on this node.
	NodeName string
	// Timeout bounds one attempt; default 5s.
	Timeout time.Duration
	// MaxAttempts counts the first call; default 3.
	MaxAttempts int
	// Backoff is the base of the jittered exponential wait between attempts;
	// default 100ms.
	Backoff time.Duration
	// RateLimit and Burst cap calls to the server from this node, so a burst
	// of pod starts or a renewal backlog cannot flood it; default 20/s, burst 40.
	RateLimit rate.Limit
	Burst     int
	// Sleep waits for d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now defaults to time.Now; it drives the rate limiter and log throttling.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// Remote is a Retriever that calls podid server's AssumeRoleForPodIdentity.
type Remote struct {
	cfg     RemoteConfig
	limiter *rate.Limiter

	mu                sync.Mutex
	lastMisconfigWarn time.Time
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
	return &Remote{cfg: cfg, limiter: rate.NewLimiter(cfg.RateLimit, cfg.Burst)}
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
// failures and network errors; token and request errors are final.
func (r *Remote) Retrieve(ctx context.Context, token string) (*Credentials, error) {
	if r.cfg.Client == nil {
		return nil, &Error{Status: http.StatusInternalServerError, Code: "AgentMisconfigured", Message: "the agent has no podid server client configured"}
	}
	req := api.AssumeRoleForPodIdentityRequest{Token: token, EksNodeName: r.cfg.NodeName}
	for attempt := 1; ; attempt++ {
		if err := r.wait(ctx); err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		resp, err := r.cfg.Client.AssumeRoleForPodIdentity(actx, r.cfg.Cluster, req)
		cancel()
		if err == nil {
			creds, cerr := convert(resp)
			if cerr != nil {
				r.cfg.Metrics.serverCall("InvalidResponse")
				return nil, cerr
			}
			r.cfg.Metrics.serverCall("")
			return creds, nil
		}
		e, metricCode, retryable := r.classify(ctx, err)
		r.cfg.Metrics.serverCall(metricCode)
		if !retryable || attempt >= r.cfg.MaxAttempts {
			return nil, e
		}
		r.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "podid server call failed, retrying",
			slog.Int("attempt", attempt), slog.String("errorCode", metricCode), slog.String("error", err.Error()))
		if r.cfg.Sleep(ctx, r.backoff(attempt)) != nil {
			return nil, e
		}
	}
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

// classify maps a client error to the *Error for the pod, a metrics label
// and whether another attempt may succeed.
func (r *Remote) classify(ctx context.Context, err error) (e *Error, metricCode string, retryable bool) {
	var ae *api.APIError
	if errors.As(err, &ae) {
		return r.classifyAPI(ctx, ae)
	}
	if ctx.Err() != nil {
		// The caller gave up; another attempt would fail the same way.
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "the request was cancelled before podid server answered", Err: err}, "canceled", false
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "podid server did not answer in time", Err: err}, "timeout", true
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "podid server is unreachable", Err: err}, "network", true
	}
	// Signing failures and undecodable answers: retrying will not help.
	return &Error{Status: http.StatusInternalServerError, Code: "InternalServerException",
		Message: "the node agent could not complete the call to podid server", Err: err}, "internal", false
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
