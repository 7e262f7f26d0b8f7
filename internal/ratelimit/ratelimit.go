// Package ratelimit keeps one caller from crowding out the others on podid
// server's credential path: token buckets per agent key and per namespace,
// and a bounded number of concurrent STS calls shared fairly between the
// namespaces waiting for one (round robin, so a noisy namespace queues
// behind itself, not in front of everyone else).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Config sets the limits. A zero rate disables that bucket; zero
// MaxConcurrent disables the queue.
type Config struct {
	// PerKey and KeyBurst bound AssumeRoleForPodIdentity calls per access key.
	PerKey   rate.Limit
	KeyBurst int
	// PerNamespace and NamespaceBurst bound calls per (cluster, namespace).
	PerNamespace   rate.Limit
	NamespaceBurst int
	// MaxConcurrent bounds STS calls in flight; waiters are served round
	// robin by namespace and give up after MaxWait.
	MaxConcurrent int
	MaxWait       time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Registerer receives the podid_server_ratelimit_* metrics; nil skips them.
	Registerer prometheus.Registerer
}

// ErrLimited is wrapped by every refusal.
var ErrLimited = errors.New("rate limited")

// Limiter applies a Config. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu      sync.Mutex
	keys    map[string]*bucket
	spaces  map[string]*bucket
	sweepAt time.Time

	// The fair queue: inFlight STS calls, and per namespace a FIFO of
	// waiters; order is the round-robin ring of namespaces with waiters.
	inFlight int
	waiting  map[string][]*waiter
	order    []string

	throttled *prometheus.CounterVec
	inflightG prometheus.Gauge
	waitingG  prometheus.Gauge
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

type waiter struct {
	ready chan struct{}
	// granted is set under the lock when a slot is handed over, so a waiter
	// that gave up can tell whether it must hand the slot on.
	granted bool
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeyBurst <= 0 {
		cfg.KeyBurst = max(1, int(cfg.PerKey))
	}
	if cfg.NamespaceBurst <= 0 {
		cfg.NamespaceBurst = max(1, int(cfg.PerNamespace))
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 2 * time.Second
	}
	l := &Limiter{
		cfg:     cfg,
		keys:    map[string]*bucket{},
		spaces:  map[string]*bucket{},
		waiting: map[string][]*waiter{},
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podid_server_ratelimit_throttled_total",
			Help: "AssumeRoleForPodIdentity calls refused with ThrottlingException, by the limit that refused them (key, namespace, queue).",
		}, []string{"limit"}),
		inflightG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podid_server_sts_calls_in_flight", Help: "STS calls in flight under the concurrency limit."}),
		waitingG:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "podid_server_sts_queue_waiting", Help: "Calls waiting for an STS slot."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(l.throttled, l.inflightG, l.waitingG,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podid_server_ratelimit_key_rate", Help: "Configured calls per second per access key (0: unlimited)."}, func() float64 { return float64(cfg.PerKey) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podid_server_ratelimit_namespace_rate", Help: "Configured calls per second per namespace (0: unlimited)."}, func() float64 { return float64(cfg.PerNamespace) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podid_server_sts_max_concurrent", Help: "Configured STS calls in flight at most (0: unlimited)."}, func() float64 { return float64(cfg.MaxConcurrent) }),
		)
	}
	return l
}

// allow takes a token from the bucket for id in m, creating it if needed.
func (l *Limiter) allow(m map[string]*bucket, id string, r rate.Limit, burst int) bool {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := m[id]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(r, burst)}
		m[id] = b
	}
	b.used = now
	l.sweepLocked(now)
	return b.lim.AllowN(now, 1)
}

// sweepLocked forgets buckets idle long enough to be full again, so the
// maps do not grow with every namespace and key ever seen.
func (l *Limiter) sweepLocked(now time.Time) {
	if now.Before(l.sweepAt) {
		return
	}
	l.sweepAt = now.Add(time.Minute)
	for _, m := range []map[string]*bucket{l.keys, l.spaces} {
		for id, b := range m {
			if now.Sub(b.used) > 10*time.Minute {
				delete(m, id)
			}
		}
	}
}

// AllowKey reports whether the access key may make another call now.
func (l *Limiter) AllowKey(accessKeyID string) error {
	if l == nil || l.cfg.PerKey == 0 {
		return nil
	}
	if !l.allow(l.keys, accessKeyID, l.cfg.PerKey, l.cfg.KeyBurst) {
		l.throttled.WithLabelValues("key").Inc()
		return fmt.Errorf("%w: access key %s is over its limit of %g calls per second", ErrLimited, accessKeyID, float64(l.cfg.PerKey))
	}
	return nil
}

// Acquire admits one STS call for a namespace of a cluster: it takes a
// token from the namespace's bucket, then waits its fair turn for an STS
// slot. The caller must call release when the STS call is done.
func (l *Limiter) Acquire(ctx context.Context, cluster, namespace string) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	ns := cluster + "/" + namespace
	if l.cfg.PerNamespace != 0 && !l.allow(l.spaces, ns, l.cfg.PerNamespace, l.cfg.NamespaceBurst) {
		l.throttled.WithLabelValues("namespace").Inc()
		return nil, fmt.Errorf("%w: namespace %s of cluster %s is over its limit of %g calls per second", ErrLimited, namespace, cluster, float64(l.cfg.PerNamespace))
	}
	if l.cfg.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	if l.inFlight < l.cfg.MaxConcurrent && len(l.order) == 0 {
		l.inFlight++
		l.inflightG.Set(float64(l.inFlight))
		l.mu.Unlock()
		return l.release, nil
	}
	w := &waiter{ready: make(chan struct{})}
	if len(l.waiting[ns]) == 0 {
		l.order = append(l.order, ns)
	}
	l.waiting[ns] = append(l.waiting[ns], w)
	l.waitingG.Inc()
	l.mu.Unlock()

	timer := time.NewTimer(l.cfg.MaxWait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return l.release, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("%w: STS calls are at their limit of %d in flight and namespace %s waited %s for a turn", ErrLimited, l.cfg.MaxConcurrent, namespace, l.cfg.MaxWait)
	}
	l.mu.Lock()
	if w.granted {
		// The slot arrived as we gave up: pass it on.
		l.mu.Unlock()
		l.release()
	} else {
		l.removeLocked(ns, w)
		l.mu.Unlock()
	}
	l.throttled.WithLabelValues("queue").Inc()
	return nil, err
}

// release frees a slot, handing it to the next namespace in the ring.
func (l *Limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.order) > 0 {
		ns := l.order[0]
		q := l.waiting[ns]
		w := q[0]
		l.waiting[ns] = q[1:]
		l.order = l.order[1:]
		if len(l.waiting[ns]) > 0 {
			l.order = append(l.order, ns) // its next waiter goes to the back
		} else {
			delete(l.waiting, ns)
		}
		l.waitingG.Dec()
		w.granted = true
		close(w.ready)
		return // the slot moves to w; inFlight is unchanged
	}
	l.inFlight--
	l.inflightG.Set(float64(l.inFlight))
}

func (l *Limiter) removeLocked(ns string, w *waiter) {
	q := l.waiting[ns]
	for i, x := range q {
		if x == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	l.waitingG.Dec()
	if len(q) > 0 {
		l.waiting[ns] = q
		return
	}
	delete(l.waiting, ns)
	for i, x := range l.order {
		if x == ns {
			l.order = append(l.order[:i:i], l.order[i+1:]...)
			break
		}
	}
}
