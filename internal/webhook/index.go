package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
)

// Index tells which service accounts have an association. It must answer
// from memory: admission never waits on the network.
type Index interface {
	// HasAssociation reports whether (namespace, serviceAccount) has an
	// association. known is false while the index has never loaded; has is
	// then meaningless.
	HasAssociation(namespace, serviceAccount string) (known, has bool)
}

// IndexConfig configures an AssociationIndex.
type IndexConfig struct {
	// Client lists associations at podid server; normally NewEKSClient with
	// a read-only key. Required.
	Client eks.ListPodIdentityAssociationsAPIClient
	// Cluster is the cluster this webhook admits pods for. Required.
	Cluster string
	// RefreshInterval between loads; default 30s, jittered by Jitter.
	RefreshInterval time.Duration
	// Jitter in [0, 1) spreads each wait uniformly over ±Jitter of it, so
	// webhook replicas do not poll in lockstep; default 0.1.
	Jitter float64
	// Timeout bounds one load, all pages included; default 20s.
	Timeout time.Duration
	// PageSize is maxResults per call, 1-100; default 100.
	PageSize int32
	// Sleep waits for d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// saKey identifies a service account; a struct, not a joined string, so no
// separator can collide.
type saKey struct{ namespace, serviceAccount string }

// AssociationIndex is an Index for one cluster, kept in memory and reloaded
// from podid server's ListPodIdentityAssociations every RefreshInterval by
// Run. Until the first load succeeds it answers known=false; after that a
// failed load keeps the last known set, because a stale set mutates pods
// correctly far more often than no set at all. It is safe for concurrent use.
type AssociationIndex struct {
	cfg       IndexConfig
	set       atomic.Pointer[map[saKey]struct{}]
	refreshMu sync.Mutex // one load at a time, so an older list never overwrites a newer one
}

// NewAssociationIndex returns a cold index; call Run to load it.
func NewAssociationIndex(cfg IndexConfig) (*AssociationIndex, error) {
	if cfg.Client == nil || cfg.Cluster == "" {
		return nil, errors.New("webhook: index Client and Cluster are required")
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 30 * time.Second
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, fmt.Errorf("webhook: index jitter %v is not in [0, 1)", cfg.Jitter)
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.PageSize <= 0 || cfg.PageSize > 100 {
		cfg.PageSize = 100
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
	return &AssociationIndex{cfg: cfg}, nil
}

// NewEKSClient returns the AWS SDK EKS client pointed at podid server's URL,
// signing with creds (a read-only key is enough for the index). httpClient
// may be nil for the SDK's default.
func NewEKSClient(endpoint, region string, creds aws.CredentialsProvider, httpClient aws.HTTPClient) *eks.Client {
	return eks.New(eks.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       region,
		Credentials:  creds,
		HTTPClient:   httpClient,
	})
}

// HasAssociation implements Index.
func (x *AssociationIndex) HasAssociation(namespace, serviceAccount string) (known, has bool) {
	set := x.set.Load()
	if set == nil {
		return false, false
	}
	_, has = (*set)[saKey{namespace, serviceAccount}]
	return true, has
}

// Ready reports whether the index has loaded at least once.
func (x *AssociationIndex) Ready() bool { return x.set.Load() != nil }

// Refresh loads the cluster's associations once, page by page, and replaces
// the set only when every page arrived: a partial list would drop
// associations and silently stop injecting.
func (x *AssociationIndex) Refresh(ctx context.Context) error {
	x.refreshMu.Lock()
	defer x.refreshMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
	defer cancel()

	set := map[saKey]struct{}{}
	pages := eks.NewListPodIdentityAssociationsPaginator(x.cfg.Client, &eks.ListPodIdentityAssociationsInput{
		ClusterName: aws.String(x.cfg.Cluster),
		MaxResults:  aws.Int32(x.cfg.PageSize),
	})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			x.cfg.Metrics.refreshFailed()
			return fmt.Errorf("webhook: listing pod identity associations of cluster %q: %w", x.cfg.Cluster, err)
		}
		for _, a := range out.Associations {
			set[saKey{aws.ToString(a.Namespace), aws.ToString(a.ServiceAccount)}] = struct{}{}
		}
	}
	x.set.Store(&set)
	x.cfg.Metrics.refreshed(len(set), x.cfg.Now())
	return nil
}

// Run loads the index now and then every RefreshInterval until ctx ends,
// and returns nil then. Before the first success it retries sooner (1s,
// doubling up to RefreshInterval), since pods admitted meanwhile go without
// credentials.
func (x *AssociationIndex) Run(ctx context.Context) error {
	failures := 0
	for {
		err := x.Refresh(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := x.cfg.RefreshInterval
		switch {
		case err == nil:
			if failures > 0 {
				x.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "association index loaded again",
					slog.String("cluster", x.cfg.Cluster), slog.Int("failures", failures))
			}
			failures = 0
		default:
			failures++
			level := slog.LevelWarn
			if failures > 1 && failures%10 != 0 {
				// One line per outage start and every tenth failure is
				// enough to act on; the counter has the rest.
				level = slog.LevelDebug
			}
			x.cfg.Logger.LogAttrs(ctx, level, "association index refresh failed; keeping the last known set",
				slog.String("cluster", x.cfg.Cluster), slog.Bool("ready", x.Ready()),
				slog.Int("failures", failures), slog.String("error", err.Error()))
			if !x.Ready() {
				wait = min(time.Second<<min(failures-1, 16), x.cfg.RefreshInterval)
			}
		}
		if x.cfg.Sleep(ctx, x.jitter(wait)) != nil {
			return nil
		}
	}
}

// jitter spreads d uniformly over [d·(1-j), d·(1+j)].
func (x *AssociationIndex) jitter(d time.Duration) time.Duration {
	span := time.Duration(float64(d) * x.cfg.Jitter)
	if span <= 0 {
		return d
	}
	return d - span + rand.N(2*span+1)
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
