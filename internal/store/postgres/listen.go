package postgres

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/podid/podid/internal/store/cache"
)

// Channel is the NOTIFY channel on which the triggers of schema version 2
// announce every committed change to clusters and associations.
const Channel = "podid_changes"

// ListenerApplicationName is the application_name of the connection Listen
// holds (suffixed to the URL's own application_name, if any), so that
// operators can tell it apart in pg_stat_activity.
const ListenerApplicationName = "podid-listener"

// Timings of the listener; variables so tests can shorten them.
var (
	// listenPingEvery is how long the listener waits for a notification
	// before it pings the server, so a connection that died silently is
	// noticed without waiting for TCP keepalives.
	listenPingEvery = 30 * time.Second
	// listenPingTimeout bounds one ping.
	listenPingTimeout = 10 * time.Second
	// listenBackoffMin and listenBackoffMax bound the wait between
	// reconnects.
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 10 * time.Second
)

// notification is the JSON payload of a notification on Channel.
type notification struct {
	Kind           string `json:"kind"`
	Cluster        string `json:"cluster"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	ID             string `json:"id"`
	// Token identifies a Sync marker.
	Token string `json:"token"`
}

var (
	_ cache.Feed   = (*Store)(nil)
	_ cache.Syncer = (*Store)(nil)
)

// Listen calls fn with every committed change to clusters and associations
// made through any Store, or by hand, on this database, in commit order,
// until ctx is done. It implements cache.Feed.
//
// It holds one connection of its own, outside the pool, for LISTEN: a
// pooler in transaction mode (PgBouncer) cannot carry it, so point podid
// at PostgreSQL itself, or at a session-mode pool. When the connection
// fails, fn gets cache.KindLost, and Listen reconnects with a jittered
// backoff of up to 10 s; once listening again fn gets cache.KindAll, since
// changes in between were missed. The first call of fn is also KindAll.
//
// Only one Listen may run per Store at a time.
func (s *Store) Listen(ctx context.Context, fn func(cache.Change)) error {
	backoff := listenBackoffMin
	for {
		start := time.Now()
		err := s.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fn(cache.Change{Kind: cache.KindLost, Err: err})
		if time.Since(start) > listenBackoffMax {
			// It was up for a while: this is a new failure, not the
			// same one again.
			backoff = listenBackoffMin
		}
		wait := backoff/2 + mathrand.N(backoff/2+1)
		backoff = min(2*backoff, listenBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx is done.
func (s *Store) listenOnce(ctx context.Context, fn func(cache.Change)) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	if app := cfg.RuntimeParams["application_name"]; app != "" {
		cfg.RuntimeParams["application_name"] = app + "-" + ListenerApplicationName
	} else {
		cfg.RuntimeParams["application_name"] = ListenerApplicationName
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return redact(fmt.Errorf("postgres: %s: listen: %w", s.target, err), s.secrets)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+Channel); err != nil {
		return fmt.Errorf("postgres: %s: LISTEN %s: %w", s.target, Channel, err)
	}
	s.listenPID.Store(conn.PgConn().PID())
	fn(cache.Change{Kind: cache.KindAll})
	// Everything committed before now is covered by the flush: release
	// Sync calls whose marker may have been sent while nobody listened.
	s.releaseSyncs("")

	for {
		wctx, cancel := context.WithTimeout(ctx, listenPingEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("postgres: %s: listener ping: %w", s.target, err)
			}
			continue
		case err != nil:
			return fmt.Errorf("postgres: %s: waiting for notifications: %w", s.target, err)
		}
		if n.Channel != Channel {
			continue
		}
		s.dispatch(n.Payload, fn)
	}
}

// dispatch turns one payload into a call of fn, or releases a Sync.
func (s *Store) dispatch(payload string, fn func(cache.Change)) {
	var p notification
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		// Not ours, or from a newer podid: flushing is always safe.
		fn(cache.Change{Kind: cache.KindAll})
		return
	}
	switch p.Kind {
	case "sync":
		// Markers of other replicas' Syncs come here too; they match
		// no waiter of this Store.
		if p.Token != "" {
			s.releaseSyncs(p.Token)
		}
	case "cluster":
		fn(cache.Change{Kind: cache.KindCluster, Cluster: p.Cluster})
	case "association":
		fn(cache.Change{Kind: cache.KindAssociation, Cluster: p.Cluster, Namespace: p.Namespace,
			ServiceAccount: p.ServiceAccount, ID: p.ID})
	default:
		fn(cache.Change{Kind: cache.KindAll})
	}
}

// Sync returns once the running Listen has passed on every change
// committed before Sync was called. It sends a marker on the channel:
// PostgreSQL delivers notifications in commit order, so when the marker
// comes back, everything before it has been delivered. A reconnect of the
// listener also releases it, since the KindAll it sends covers everything.
// Without a running Listen it waits until ctx is done.
func (s *Store) Sync(ctx context.Context) error {
	token := rand.Text()
	done := make(chan struct{})
	s.syncMu.Lock()
	if s.syncs == nil {
		s.syncs = make(map[string]chan struct{})
	}
	s.syncs[token] = done
	s.syncMu.Unlock()
	defer func() {
		s.syncMu.Lock()
		delete(s.syncs, token)
		s.syncMu.Unlock()
	}()

	payload, _ := json.Marshal(notification{Kind: "sync", Token: token})
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, string(payload)); err != nil {
		return fmt.Errorf("postgres: sync change feed: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// releaseSyncs releases the Sync waiting for the token, or every Sync when
// the token is empty.
func (s *Store) releaseSyncs(token string) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	for t, done := range s.syncs {
		if token == "" || t == token {
			close(done)
			delete(s.syncs, t)
		}
	}
}

// ListenerPID is the server process ID of the connection Listen holds or
// last held, 0 before the first; for tests and for operators to find it in
// pg_stat_activity.
func (s *Store) ListenerPID() uint32 {
	return s.listenPID.Load()
}
