package agent

import (
	"container/list"
	"context"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Next is the retriever behind the cache, normally a *Remote.
	Next Retriever
	// Now defaults to time.Now.
	Now func() time.Time
	// MaxEntries bounds the cache; the least recently requested token goes
	// first. Default 2000, as the EKS agent.
	MaxEntries int
	// MaxAge renews credentials older than this even if they are still
	// valid, so role policy and association changes reach running pods.
	// Default 3h, as the EKS agent.
	MaxAge time.Duration
	// MinValidity: credentials expiring sooner than this are not served from
	// the cache (the SDKs refresh about 5 minutes before expiry, some
	// earlier). Default 15m. For credentials whose whole lifetime is short,
	// half their lifetime is used instead, or they could never be cached.
	MinValidity time.Duration
	// RefreshInterval is the period of Run's renewal scan, jittered; default 1m.
	RefreshInterval time.Duration
	// FetchTimeout bounds one exchange through Next. The exchange is shared
	// by every request for the token, so it does not end when the request
	// that started it goes away. Default 30s.
	FetchTimeout time.Duration
	// OutageBackoff: after a renewal failed for reasons that are not the
	// token's (server down, throttled, timeout), requests are answered with
	// the cached, still valid credentials for this long without another
	// server call, so pods are not held up by a dead server on every fetch.
	// Default 30s.
	OutageBackoff time.Duration
	// RenewConcurrency is how many renewals Run does at once; default 4.
	// Remote's rate limit is the real bound on server load.
	RenewConcurrency int
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// Cache is a Retriever that keeps credentials per token, renews them ahead of
// expiry in the background, and rides out server outages with credentials
// that are still valid.
type Cache struct {
	cfg   CacheConfig
	group singleflight.Group

	mu      sync.Mutex
	entries map[tokenKey]*list.Element // of *entry
	lru     *list.List                 // front: most recently requested
}

type entry struct {
	key tokenKey
	// token is kept for background renewal; it never goes into a log.
	token string
	// tokenExp and tokenLife come from the token's unverified claims; zero
	// when absent, and then the entry is never renewed in the background.
	tokenExp  time.Time
	tokenLife time.Duration
	creds     *Credentials
	fetchedAt time.Time
	lastUsed  time.Time
	// failedAt is when the last renewal failed for a reason that is not the
	// token's; zero after a success.
	failedAt time.Time
}

// NewCache returns a Cache with defaults filled in. Call Run to renew
// entries in the background.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 2000
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 3 * time.Hour
	}
	if cfg.MinValidity <= 0 {
		cfg.MinValidity = 15 * time.Minute
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Minute
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.OutageBackoff <= 0 {
		cfg.OutageBackoff = 30 * time.Second
	}
	if cfg.RenewConcurrency <= 0 {
		cfg.RenewConcurrency = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{cfg: cfg, entries: make(map[tokenKey]*list.Element), lru: list.New()}
}

// Len returns the number of cached tokens.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// minValidity is the least remaining lifetime at which e's credentials are
// still served as fresh.
func (c *Cache) minValidity(e *entry) time.Duration {
	return min(c.cfg.MinValidity, e.creds.Expiration.Sub(e.fetchedAt)/2)
}

func (c *Cache) fresh(e *entry, now time.Time) bool {
	return e.creds.Expiration.Sub(now) >= c.minValidity(e) && now.Sub(e.fetchedAt) < c.cfg.MaxAge && tokenLive(e, now)
}

// tokenLive reports whether e's token has not expired. The cache must not
// hand out credentials for a token the server would now reject.
func tokenLive(e *entry, now time.Time) bool {
	return e.tokenExp.IsZero() || now.Before(e.tokenExp)
}

// loadResult is the value of a flight.
type loadResult struct {
	creds *Credentials
	// stale: the exchange failed and creds are the cached, still valid ones.
	stale bool
}

// Retrieve returns cached credentials for token when they are fresh, and
// otherwise exchanges the token once for all concurrent requests with it.
func (c *Cache) Retrieve(ctx context.Context, token string) (*Credentials, error) {
	key := keyOf(token)
	now := c.cfg.Now()
	c.mu.Lock()
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*entry)
		e.lastUsed = now
		c.lru.MoveToFront(el)
		creds := e.creds
		switch {
		case c.fresh(e, now):
			c.mu.Unlock()
			c.cfg.Metrics.hit()
			return creds, nil
		case !e.failedAt.IsZero() && now.Sub(e.failedAt) < c.cfg.OutageBackoff && now.Before(creds.Expiration) && tokenLive(e, now):
			c.mu.Unlock()
			c.cfg.Metrics.stale()
			return creds, nil
		}
	}
	c.mu.Unlock()
	c.cfg.Metrics.miss()

	ch := c.group.DoChan(flightKey(key), func() (any, error) { return c.load(ctx, key, token) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		lr := res.Val.(loadResult)
		if lr.stale {
			c.cfg.Metrics.stale()
		}
		return lr.creds, nil
	case <-ctx.Done():
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailableException",
			Message: "the request ended before credentials were ready", Err: ctx.Err()}
	}
}

func flightKey(k tokenKey) string { return hex.EncodeToString(k[:]) }

// load exchanges the token through Next and updates the cache. It runs once
// per flight, on behalf of every request waiting for the same token, so it
// is detached from the cancellation of the request that happened to start it.
func (c *Cache) load(ctx context.Context, key tokenKey, token string) (any, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FetchTimeout)
	defer cancel()
	creds, err := c.cfg.Next.Retrieve(fctx, token)
	if creds == nil && err == nil {
		err = &Error{Status: http.StatusInternalServerError, Code: "InternalServerException", Message: "the node agent's retriever returned no credentials"}
	}
	now := c.cfg.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	el, cached := c.entries[key]
	if err == nil {
		if cached {
			e := el.Value.(*entry)
			e.creds, e.fetchedAt, e.failedAt = creds, now, time.Time{}
			return loadResult{creds: creds}, nil
		}
		exp, iat := tokenTimes(token)
		e := &entry{key: key, token: token, tokenExp: exp, creds: creds, fetchedAt: now, lastUsed: now}
		if !exp.IsZero() && !iat.IsZero() && exp.After(iat) {
			e.tokenLife = exp.Sub(iat)
		}
		c.entries[key] = c.lru.PushFront(e)
		for c.lru.Len() > c.cfg.MaxEntries {
			c.removeLocked(c.lru.Back())
		}
		c.cfg.Metrics.entries(c.lru.Len())
		return loadResult{creds: creds}, nil
	}
	if !cached {
		return nil, err
	}
	e := el.Value.(*entry)
	if tokenError(err) {
		c.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "dropping cached credentials: the server rejected the token",
			slog.String("token", key.fingerprint()), slog.String("error", err.Error()))
		c.removeLocked(el)
		c.cfg.Metrics.entries(c.lru.Len())
		return nil, err
	}
	if !now.Before(e.creds.Expiration) || !tokenLive(e, now) {
		return nil, err
	}
	// The server is down, throttling or failing: credentials that are still
	// valid are better than none, and the pod's SDK will ask again soon.
	e.failedAt = now
	c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "renewal failed, serving cached credentials until they expire",
		slog.String("token", key.fingerprint()), slog.Time("expiration", e.creds.Expiration), slog.String("error", err.Error()))
	return loadResult{creds: e.creds, stale: true}, nil
}

func (c *Cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.entries, e.key)
}

// Run renews entries ahead of need until ctx ends, so that pods' requests
// are answered from the cache. It returns ctx's error.
func (c *Cache) Run(ctx context.Context) error {
	t := time.NewTimer(c.jittered())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		c.renew(ctx)
		t.Reset(c.jittered())
	}
}

// jittered spreads scans of agents that started together: ±10%.
func (c *Cache) jittered() time.Duration {
	d := c.cfg.RefreshInterval
	return d - d/10 + rand.N(d/5+1)
}

type renewal struct {
	key   tokenKey
	token string
}

// renew runs one scan: it evicts entries whose token has expired or that can
// no longer be renewed, and renews those that will soon stop being fresh.
func (c *Cache) renew(ctx context.Context) {
	now := c.cfg.Now()
	var due []renewal
	c.mu.Lock()
	for el := c.lru.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*entry)
		switch {
		case c.renewable(e, now):
			if c.needsRenewal(e, now) {
				due = append(due, renewal{key: e.key, token: e.token})
			}
		case !e.tokenExp.IsZero() && !now.Before(e.tokenExp), !now.Before(e.creds.Expiration):
			// The token is dead, or the credentials are and cannot be renewed.
			c.removeLocked(el)
			c.cfg.Metrics.refresh("evicted")
		}
		el = next
	}
	c.cfg.Metrics.entries(c.lru.Len())
	c.mu.Unlock()

	var g errgroup.Group
	g.SetLimit(c.cfg.RenewConcurrency)
	for _, r := range due {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			// The same flight as requests: a request for this token joins the
			// renewal instead of making a second call, and requests whose
			// entry is still fresh never wait for it.
			v, err, _ := c.group.Do(flightKey(r.key), func() (any, error) { return c.load(ctx, r.key, r.token) })
			switch {
			case err == nil && !v.(loadResult).stale:
				c.cfg.Metrics.refresh("ok")
			case tokenError(err):
				c.cfg.Metrics.refresh("evicted")
			default:
				c.cfg.Metrics.refresh("error")
			}
			return nil
		})
	}
	_ = g.Wait()
}

// renewable reports whether the background may still exchange e's token: the
// token has not expired and a pod asked for it within the token's lifetime.
// Kubelet rotates tokens well before they expire and the SDKs re-read the
// file on every fetch, so a token nobody asks for belongs to a pod that moved
// on or went away.
func (c *Cache) renewable(e *entry, now time.Time) bool {
	if e.tokenExp.IsZero() || !now.Before(e.tokenExp) {
		return false
	}
	idle := e.tokenLife
	if idle == 0 {
		idle = c.cfg.MaxAge
	}
	return now.Sub(e.lastUsed) <= idle
}

func (c *Cache) needsRenewal(e *entry, now time.Time) bool {
	if now.Sub(e.fetchedAt) >= c.cfg.MaxAge*8/10 {
		return true
	}
	return e.creds.Expiration.Sub(now) < c.minValidity(e)+2*c.cfg.RefreshInterval
}
