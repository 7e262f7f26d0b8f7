package postgres

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/postgres/pgtest"
	"github.com/podid/podid/internal/store/storetest"
)

func TestStore(t *testing.T) {
	pgtest.URL(t) // skip or fail once, not in every subtest
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		url := pgtest.Fresh(t)
		return func(t *testing.T) identity.Store {
			s, err := Open(t.Context(), url)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
	})
}

func TestUpgrades(t *testing.T) {
	pgtest.URL(t)
	storetest.RunUpgrades(t, len(migrations), func(t *testing.T) (storetest.Opener, storetest.MigrateTo) {
		url := pgtest.Fresh(t)
		opener := func(t *testing.T) identity.Store {
			s, err := Open(t.Context(), url)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
		migrateTo := func(t *testing.T, v int) {
			s := openSteps(t, url, migrations[:v])
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := schemaVersion(t, url); got != v {
				t.Fatalf("schema version after migrating to %d = %d", v, got)
			}
		}
		return opener, migrateTo
	})
}

// openSteps opens a Store whose code knows the given schema steps.
func openSteps(t testing.TB, url string, steps []string) *Store {
	t.Helper()
	s, err := open(context.Background(), url, steps)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawConn connects without the Store, to look at or tamper with the
// database.
func rawConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func schemaVersion(t testing.TB, url string) int {
	t.Helper()
	var v int
	if err := rawConn(t, url).QueryRow(context.Background(), `SELECT version FROM schema_version`).Scan(&v); err != nil {
		t.Fatalf("read schema version: %v", err)
	}
	return v
}

func count(t testing.TB, c *pgx.Conn, query string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	// Replicas rolled out together all open a fresh database at once. Two
	// extra steps make a step applied twice visible: a second CREATE TABLE
	// would fail, a second INSERT would leave two rows. The sleep holds the
	// race window open.
	steps := append(append([]string(nil), migrations...),
		`CREATE TABLE applied (step integer NOT NULL)`,
		`SELECT pg_sleep(0.05); INSERT INTO applied VALUES (1)`,
	)
	for _, tt := range []struct {
		name  string
		steps []string
	}{
		{"released", migrations},
		{"with test steps", steps},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := pgtest.Fresh(t)
			const n = 5
			stores := make([]*Store, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					stores[i], errs[i] = open(t.Context(), url, tt.steps)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Open %d: %v", i, err)
					continue
				}
				if err := stores[i].CreateCluster(t.Context(), &identity.Cluster{Name: fmt.Sprint("c", i)}); err != nil {
					t.Errorf("CreateCluster through Store %d: %v", i, err)
				}
				_ = stores[i].Close()
			}
			c := rawConn(t, url)
			if got := schemaVersion(t, url); got != len(tt.steps) {
				t.Errorf("schema version = %d, want %d", got, len(tt.steps))
			}
			if got := count(t, c, `SELECT count(*) FROM schema_version`); got != 1 {
				t.Errorf("schema_version has %d rows, want 1", got)
			}
			if len(tt.steps) > len(migrations) {
				if got := count(t, c, `SELECT count(*) FROM applied`); got != 1 {
					t.Errorf("the last step ran %d times, want once", got)
				}
			}
		})
	}
}

func TestFreshDatabaseHasLatestVersion(t *testing.T) {
	url := pgtest.Fresh(t)
	s := openSteps(t, url, migrations)
	if got := schemaVersion(t, url); got != len(migrations) {
		t.Errorf("schema version = %d, want %d", got, len(migrations))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening an up-to-date database changes nothing.
	openSteps(t, url, migrations)
	if got := schemaVersion(t, url); got != len(migrations) {
		t.Errorf("schema version after reopen = %d, want %d", got, len(migrations))
	}
	if got := count(t, rawConn(t, url), `SELECT count(*) FROM schema_version`); got != 1 {
		t.Errorf("schema_version has %d rows, want 1", got)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	url := pgtest.Fresh(t)
	if err := openSteps(t, url, migrations).Close(); err != nil {
		t.Fatal(err)
	}
	future := len(migrations) + 1
	if _, err := rawConn(t, url).Exec(t.Context(), `UPDATE schema_version SET version = $1`, future); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), url)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("error = %v, want ErrSchemaTooNew", err)
	}
	cfg, perr := pgx.ParseConfig(url)
	if perr != nil {
		t.Fatal(perr)
	}
	for _, want := range []string{fmt.Sprintf("version %d", future), fmt.Sprintf("up to %d", len(migrations)), cfg.Database} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if cfg.Password != "" && strings.Contains(err.Error(), cfg.Password) {
		t.Errorf("error %q holds the password", err)
	}
	// The refusal must not have touched the version.
	if got := schemaVersion(t, url); got != future {
		t.Errorf("schema version after refusal = %d, want %d", got, future)
	}
}

func TestMigrateForward(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Fresh(t)
	s := openSteps(t, url, migrations)
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}

	next := append(append([]string(nil), migrations...),
		`ALTER TABLE clusters ADD COLUMN description text NOT NULL DEFAULT 'none'`,
		`CREATE TABLE extra (x integer); INSERT INTO extra VALUES (42);`,
	)
	if err := migrate(ctx, s.pool, next); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if got := schemaVersion(t, url); got != len(next) {
		t.Errorf("schema version = %d, want %d", got, len(next))
	}
	var desc string
	var x int
	if err := s.pool.QueryRow(ctx, `SELECT description FROM clusters WHERE name = 'prod'`).Scan(&desc); err != nil || desc != "none" {
		t.Errorf("migrated column: description = %q, err = %v", desc, err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT x FROM extra`).Scan(&x); err != nil || x != 42 {
		t.Errorf("migrated table: x = %d, err = %v", x, err)
	}

	// Running again is a no-op; the older step list now refuses.
	if err := migrate(ctx, s.pool, next); err != nil {
		t.Errorf("second migrate: %v", err)
	}
	if got := count(t, rawConn(t, url), `SELECT count(*) FROM extra`); got != 1 {
		t.Errorf("extra has %d rows after a second migrate, want 1", got)
	}
	if err := migrate(ctx, s.pool, migrations); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("migrate with fewer steps: error = %v, want ErrSchemaTooNew", err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Fresh(t)
	s := openSteps(t, url, migrations)
	bad := append(append([]string(nil), migrations...),
		`CREATE TABLE half (x integer); THIS IS NOT SQL;`,
	)
	if err := migrate(ctx, s.pool, bad); err == nil {
		t.Fatal("migrate with a broken step succeeded")
	}
	if got := schemaVersion(t, url); got != len(migrations) {
		t.Errorf("schema version after failed step = %d, want %d", got, len(migrations))
	}
	if got := count(t, rawConn(t, url), `SELECT count(*) FROM pg_tables WHERE tablename = 'half'`); got != 0 {
		t.Error("the failed step's first statement was not rolled back")
	}
	// The failure left no lock behind: the next migration runs.
	if err := migrate(ctx, s.pool, migrations); err != nil {
		t.Errorf("migrate after a failed step: %v", err)
	}
}

func TestRefusesNonUTF8Database(t *testing.T) {
	url := pgtest.FreshWith(t, "TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
	s, err := Open(t.Context(), url)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a LATIN1 database succeeded")
	}
	if !strings.Contains(err.Error(), "LATIN1") || !strings.Contains(err.Error(), "UTF8") {
		t.Errorf("error %q does not name the encodings", err)
	}
	var n int
	if err := rawConn(t, url).QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE tablename = 'schema_version'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the refused database was migrated: %d schema_version tables, err = %v", n, err)
	}
}

func TestOpenErrorsHidePassword(t *testing.T) {
	const pw = "s3cr3t-Pa55"
	tests := []struct {
		name, url string
	}{
		{"unreachable", "postgres://podid:" + pw + "@127.0.0.1:1/podid?sslmode=disable&connect_timeout=5"},
		{"password in query", "postgres://127.0.0.1:1/podid?user=podid&password=" + pw + "&sslmode=disable&connect_timeout=5"},
		{"bad port", "postgres://podid:" + pw + "@127.0.0.1:notaport/podid"},
		{"bad option", "postgres://podid:" + pw + "@127.0.0.1/podid?sslmode=bogus"},
		{"broken URL", "postgres://podid:" + pw + "@[::1/podid"},
		{"escaped password", "postgres://podid:" + pw + "%2F%40@127.0.0.1:1/podid?sslmode=disable&connect_timeout=5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			s, err := Open(ctx, tt.url)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(fmt.Sprintf("%+v", err), pw) {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}

func TestWrongPasswordIsHidden(t *testing.T) {
	url := pgtest.Fresh(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	const pw = "wr0ng-Pa55-xyz"
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(cfg.User, pw)
	bad := u.String()
	s, err := Open(t.Context(), bad)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error %q holds the password", err)
	}
	if !strings.Contains(err.Error(), cfg.Database) {
		t.Errorf("error %q does not name the database", err)
	}
}

func TestRedact(t *testing.T) {
	inner := errors.New("dial postgres://u:hunter2@db/x and hunter%2F2")
	err := redact(fmt.Errorf("postgres: %w", inner), urlSecrets("postgres://u:hunter%2F2@db/x", "hunter2"))
	if got, want := err.Error(), "postgres: dial postgres://u:xxxxx@db/x and xxxxx"; got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("redaction broke errors.Is")
	}
	plain := errors.New("no secret here")
	if got := redact(plain, urlSecrets("postgres://u:pw@db/x", "")); got != plain {
		t.Errorf("redact changed an error without secrets: %v", got)
	}
}

func TestHotPathQueriesUseIndexes(t *testing.T) {
	ctx := t.Context()
	url := pgtest.Fresh(t)
	openSteps(t, url, migrations)
	c := rawConn(t, url)
	// Enough rows, with statistics, for the planner to choose as it would
	// in production; a sequential scan is forbidden so that the small
	// tables still show whether an index can answer each query in order.
	for _, q := range []string{
		`INSERT INTO clusters SELECT 'c' || i, '', '{}', 0, 0 FROM generate_series(0, 49) i`,
		`INSERT INTO associations (id, cluster, namespace, service_account, role_arn, client_request_token, created_at, modified_at)
			SELECT 'a-' || i, 'c' || (i % 50), 'ns-' || (i % 10), 'sa-' || i, '', CASE WHEN i % 3 = 0 THEN '' ELSE 'tok-' || i END, i, i
			FROM generate_series(0, 4999) i`,
		`INSERT INTO audit (time, cluster) SELECT i, 'c' || (i % 50) FROM generate_series(0, 4999) i`,
		`ANALYZE`,
		`SET enable_seqscan = off`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tests := []struct {
		name, query string
		indexes     []string // any of them will do
		sortOK      bool
	}{
		{"FindAssociation", `SELECT id FROM associations WHERE cluster = 'c7' AND namespace = 'n' AND service_account = 's'`, []string{"associations_identity_key"}, false},
		{"FindAssociationByRequestToken", `SELECT id FROM associations WHERE cluster = 'c7' AND client_request_token = 't' ORDER BY created_at, id LIMIT 1`, []string{"associations_cluster_request_token"}, true},
		{"GetAssociation", `SELECT id FROM associations WHERE id = 'a-7' AND cluster = 'c7'`, []string{"associations_pkey", "associations_cluster_id"}, false},
		{"ListAssociations", `SELECT id FROM associations WHERE cluster = 'c7' AND id > '' ORDER BY id LIMIT 10`, []string{"associations_cluster_id"}, false},
		{"ListClusters", `SELECT name FROM clusters ORDER BY name`, []string{"clusters_pkey"}, false},
		{"ListAudit", `SELECT id FROM audit WHERE true AND id < 5 ORDER BY id DESC LIMIT 10`, []string{"audit_pkey"}, false},
		{"ListAudit by cluster", `SELECT id FROM audit WHERE true AND cluster = 'c7' AND id < 5 ORDER BY id DESC LIMIT 10`, []string{"audit_cluster_id"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := c.Query(ctx, "EXPLAIN "+tt.query)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			if !slices.ContainsFunc(tt.indexes, func(ix string) bool { return strings.Contains(plan, " "+ix+" ") }) {
				t.Errorf("plan uses none of %v:\n%s", tt.indexes, plan)
			}
			if strings.Contains(plan, "Seq Scan") {
				t.Errorf("plan has a sequential scan:\n%s", plan)
			}
			if !tt.sortOK && strings.Contains(plan, "Sort") {
				t.Errorf("plan sorts instead of reading the index in order:\n%s", plan)
			}
		})
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.Context(), pgtest.Fresh(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.GetCluster(t.Context(), "x"); err == nil || errors.Is(err, identity.ErrNotFound) {
		t.Errorf("GetCluster on closed store: error = %v, want a database error", err)
	}
}

func BenchmarkFindAssociation(b *testing.B) {
	ctx := context.Background()
	url := pgtest.Fresh(b)
	s := openSteps(b, url, migrations)
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		b.Fatal(err)
	}
	const n = 10_000
	// One COPY for the fixture; 10k round trips would dominate the setup.
	now := time.Now().UnixNano()
	rows := make([][]any, n)
	for i := range n {
		rows[i] = []any{fmt.Sprintf("a-%05d", i), "prod", fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("sa-%d", i),
			"arn:aws:iam::111122223333:role/r", `{"team":"x"}`, now, now}
	}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"associations"},
		[]string{"id", "cluster", "namespace", "service_account", "role_arn", "tags", "created_at", "modified_at"},
		pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE associations`); err != nil {
		b.Fatal(err)
	}

	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			k := i % n
			i++
			if _, err := s.FindAssociation(ctx, "prod", fmt.Sprintf("ns-%d", k%100), fmt.Sprintf("sa-%d", k)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := i % n
				i += 7
				if _, err := s.FindAssociation(ctx, "prod", fmt.Sprintf("ns-%d", k%100), fmt.Sprintf("sa-%d", k)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
