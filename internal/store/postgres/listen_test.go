package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/cache"
	"github.com/podid/podid/internal/store/postgres/pgtest"
)

// listener runs s.Listen for the test and collects what it delivers.
type listener struct {
	t       *testing.T
	s       *Store
	changes chan cache.Change
}

func startListener(t *testing.T, s *Store) *listener {
	t.Helper()
	l := &listener{t: t, s: s, changes: make(chan cache.Change, 10000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func(c cache.Change) { l.changes <- c }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen returned %v, want context.Canceled", err)
		}
	})
	return l
}

// next waits for the next change.
func (l *listener) next() cache.Change {
	l.t.Helper()
	select {
	case c := <-l.changes:
		return c
	case <-time.After(30 * time.Second):
		l.t.Fatal("no change from Listen within 30s")
		return cache.Change{}
	}
}

// synced returns what was delivered up to now, once Sync says everything
// committed before has been, in a stable order: changes of one statement
// come in no particular order.
func (l *listener) synced() []cache.Change {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.s.Sync(ctx); err != nil {
		l.t.Fatalf("Sync: %v", err)
	}
	var out []cache.Change
	for {
		select {
		case c := <-l.changes:
			out = append(out, c)
		default:
			slices.SortFunc(out, func(a, b cache.Change) int {
				return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Cluster, b.Cluster),
					cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.ServiceAccount, b.ServiceAccount))
			})
			return out
		}
	}
}

func TestListenAnnouncesEveryChange(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Fresh(t)
	s := openSteps(t, url, migrations)
	raw := rawConn(t, url)
	l := startListener(t, s)
	if c := l.next(); c.Kind != cache.KindAll {
		t.Fatalf("first change = %+v, want KindAll", c)
	}

	exec := func(sql string) func() error {
		return func() error { _, err := raw.Exec(ctx, sql); return err }
	}
	a := &identity.Association{ID: "a-1", Cluster: "prod", Namespace: "ns", ServiceAccount: "sa", RoleARN: "arn:aws:iam::111122223333:role/r"}
	moved := *a
	moved.Namespace, moved.ServiceAccount = "ns2", "sa2"
	cluster := func(name string) cache.Change { return cache.Change{Kind: cache.KindCluster, Cluster: name} }
	assoc := func(c, ns, sa, id string) cache.Change {
		return cache.Change{Kind: cache.KindAssociation, Cluster: c, Namespace: ns, ServiceAccount: sa, ID: id}
	}
	all := cache.Change{Kind: cache.KindAll}

	for _, step := range []struct {
		name    string
		do      func() error
		wantErr bool
		want    []cache.Change
	}{
		{"create cluster", func() error { return s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}) }, false,
			[]cache.Change{cluster("prod")}},
		{"create association", func() error { return s.CreateAssociation(ctx, a) }, false,
			[]cache.Change{assoc("prod", "ns", "sa", "a-1")}},
		{"move association: old and new keys", func() error { return s.UpdateAssociation(ctx, &moved) }, false,
			[]cache.Change{assoc("prod", "ns", "sa", "a-1"), assoc("prod", "ns2", "sa2", "a-1")}},
		{"update cluster", func() error { return s.UpdateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://y"}) }, false,
			[]cache.Change{cluster("prod")}},
		{"failed write announces nothing", func() error { return s.CreateAssociation(ctx, &moved) }, true, nil},
		{"delete association", func() error { return s.DeleteAssociation(ctx, "prod", "a-1") }, false,
			[]cache.Change{assoc("prod", "ns2", "sa2", "a-1")}},
		{"change by hand", exec(`INSERT INTO clusters VALUES ('other', 'https://o', '{}', 0, 0)`), false,
			[]cache.Change{cluster("other")}},
		{"bulk insert: one change per cluster", exec(`INSERT INTO associations (id, cluster, namespace, service_account, role_arn, created_at, modified_at)
			SELECT 'b-' || i, CASE WHEN i = 0 THEN 'other' ELSE 'prod' END, 'ns', 'sa-' || i, 'arn', 0, 0 FROM generate_series(0, 150) i`), false,
			[]cache.Change{cluster("other"), cluster("prod")}},
		{"small multi-row update: one change per row", exec(`UPDATE associations SET role_arn = 'arn2' WHERE id IN ('b-1', 'b-2')`), false,
			[]cache.Change{assoc("prod", "ns", "sa-1", "b-1"), assoc("prod", "ns", "sa-2", "b-2")}},
		{"cluster delete and its cascade: one change", func() error { return s.DeleteCluster(ctx, "prod") }, false,
			[]cache.Change{cluster("prod")}},
		{"oversized payload widens to the cluster", exec(`UPDATE associations SET namespace = repeat('n', 7000) WHERE id = 'b-0'`), false,
			[]cache.Change{cluster("other"), assoc("other", "ns", "sa-0", "b-0")}},
		{"oversized cluster name widens to everything", exec(`INSERT INTO clusters VALUES (repeat('c', 7500), 'https://o', '{}', 0, 0)`), false,
			[]cache.Change{all}},
		{"truncate", exec(`TRUNCATE clusters CASCADE`), false, []cache.Change{all}},
		{"unknown payload is a flush", exec(`SELECT pg_notify('podid_changes', '{"kind":"from-the-future"}'), pg_notify('podid_changes', 'not json')`), false,
			[]cache.Change{all, all}},
		{"other channels are ignored", exec(`SELECT pg_notify('something_else', '{"kind":"cluster","cluster":"x"}')`), false, nil},
	} {
		err := step.do()
		if (err != nil) != step.wantErr {
			t.Fatalf("%s: error = %v, want error: %v", step.name, err, step.wantErr)
		}
		if diff := gocmp.Diff(step.want, l.synced(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: changes (-want +got):\n%s", step.name, diff)
		}
	}
}

func TestListenReconnects(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Fresh(t)
	s := openSteps(t, url, migrations)
	raw := rawConn(t, url)
	l := startListener(t, s)
	if c := l.next(); c.Kind != cache.KindAll {
		t.Fatalf("first change = %+v, want KindAll", c)
	}
	pid := s.ListenerPID()
	var app string
	if err := raw.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&app); err != nil {
		t.Fatalf("find the listener in pg_stat_activity: %v", err)
	}
	if !strings.HasSuffix(app, ListenerApplicationName) {
		t.Errorf("listener application_name = %q, want it to end in %q", app, ListenerApplicationName)
	}

	if _, err := raw.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	if c := l.next(); c.Kind != cache.KindLost || c.Err == nil {
		t.Fatalf("after the listener's connection was terminated: change = %+v, want KindLost with an error", c)
	}
	if c := l.next(); c.Kind != cache.KindAll {
		t.Fatalf("after KindLost: change = %+v, want KindAll on reconnect", c)
	}
	if s.ListenerPID() == pid {
		t.Errorf("the listener still reports backend %d after reconnecting", pid)
	}
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "after", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff([]cache.Change{{Kind: cache.KindCluster, Cluster: "after"}}, l.synced()); diff != "" {
		t.Errorf("changes after reconnecting (-want +got):\n%s", diff)
	}
}

func TestSyncWithoutListenWaitsForContext(t *testing.T) {
	s := openSteps(t, pgtest.Fresh(t), migrations)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := s.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sync without a listener = %v, want DeadlineExceeded", err)
	}
}
