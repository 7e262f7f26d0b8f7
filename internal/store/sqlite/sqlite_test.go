package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "podid.db")
		return func(t *testing.T) identity.Store {
			s, err := Open(t.Context(), path)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
	})
}

func openT(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawDB opens the file without the Store, to look at or tamper with it.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func schemaVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil {
		t.Fatalf("read schema version: %v", err)
	}
	return v
}

func TestOpenCreatesFileAndDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "podid.db")
	s := openT(t, path)
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("database file mode = %v, want 0600", got)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %v, want 0700", got)
	}
}

func TestOpenOddPath(t *testing.T) {
	// The driver would cut a plain name at '?'; the file: URI must keep it.
	path := filepath.Join(t.TempDir(), "we?ird #dir%20", "po?did.db")
	s := openT(t, path)
	ctx := t.Context()
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

func TestOpenRejectsNonFile(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db"} {
		if s, err := Open(t.Context(), p); err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded, want an error", p)
		}
	}
}

func TestFreshDatabaseHasLatestVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podid.db")
	s := openT(t, path)
	if got, want := schemaVersion(t, s.rdb), len(migrations); got != want {
		t.Errorf("schema version = %d, want %d", got, want)
	}
	// Reopening an up-to-date database changes nothing.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, path)
	if got, want := schemaVersion(t, s.rdb), len(migrations); got != want {
		t.Errorf("schema version after reopen = %d, want %d", got, want)
	}
	var rows int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("schema_version has %d rows, want 1", rows)
	}
}

func TestPragmas(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "podid.db"))
	ctx := t.Context()
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.wdb, "journal_mode", "wal"},
		{s.rdb, "journal_mode", "wal"},
		{s.wdb, "foreign_keys", "1"},
		{s.rdb, "foreign_keys", "1"},
		{s.wdb, "synchronous", "1"}, // NORMAL
		{s.wdb, "busy_timeout", fmt.Sprint(busyTimeout.Milliseconds())},
		{s.rdb, "busy_timeout", fmt.Sprint(busyTimeout.Milliseconds())},
		{s.rdb, "query_only", "1"},
	}
	for _, tt := range tests {
		var got string
		if err := tt.db.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podid.db")
	s := openT(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	future := len(migrations) + 1
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, future); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("error = %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{fmt.Sprintf("version %d", future), fmt.Sprintf("up to %d", len(migrations)), path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// The refusal must not have touched the version.
	if got := schemaVersion(t, rawDB(t, path)); got != future {
		t.Errorf("schema version after refusal = %d, want %d", got, future)
	}
}

func TestMigrateForward(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "podid.db")
	s := openT(t, path)
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		t.Fatal(err)
	}

	next := append(append([]string(nil), migrations...),
		`ALTER TABLE clusters ADD COLUMN description TEXT NOT NULL DEFAULT 'none'`,
		`CREATE TABLE extra (x INTEGER) STRICT; INSERT INTO extra VALUES (42);`,
	)
	if err := migrate(ctx, s.wdb, next); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if got := schemaVersion(t, s.wdb); got != len(next) {
		t.Errorf("schema version = %d, want %d", got, len(next))
	}
	var desc string
	var x int
	if err := s.wdb.QueryRowContext(ctx, `SELECT description FROM clusters WHERE name = 'prod'`).Scan(&desc); err != nil {
		t.Fatalf("migrated column: %v", err)
	}
	if err := s.wdb.QueryRowContext(ctx, `SELECT x FROM extra`).Scan(&x); err != nil || x != 42 {
		t.Errorf("migrated table: x = %d, err = %v", x, err)
	}

	// Running again is a no-op; the older step list now refuses.
	if err := migrate(ctx, s.wdb, next); err != nil {
		t.Errorf("second migrate: %v", err)
	}
	if err := migrate(ctx, s.wdb, migrations); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("migrate with fewer steps: error = %v, want ErrSchemaTooNew", err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := t.Context()
	s := openT(t, filepath.Join(t.TempDir(), "podid.db"))
	bad := append(append([]string(nil), migrations...),
		`CREATE TABLE half (x INTEGER); THIS IS NOT SQL;`,
	)
	if err := migrate(ctx, s.wdb, bad); err == nil {
		t.Fatal("migrate with a broken step succeeded")
	}
	if got := schemaVersion(t, s.wdb); got != len(migrations) {
		t.Errorf("schema version after failed step = %d, want %d", got, len(migrations))
	}
	var n int
	if err := s.wdb.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("the failed step's first statement was not rolled back")
	}
}

func TestHotPathQueriesUseIndexes(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "podid.db"))
	tests := []struct {
		name, query string
		args        []any
		want        string // in the plan: the constraints the index answers
	}{
		{"FindAssociation", `SELECT id FROM associations WHERE cluster = ? AND namespace = ? AND service_account = ?`, []any{"c", "n", "s"}, "(cluster=? AND namespace=? AND service_account=?)"},
		{"FindAssociationByRequestToken", `SELECT id FROM associations WHERE cluster = ? AND client_request_token = ? ORDER BY created_at, id LIMIT 1`, []any{"c", "t"}, "(cluster=? AND client_request_token=?)"},
		{"ListAssociations", `SELECT id FROM associations WHERE cluster = ? AND id > ? ORDER BY id LIMIT ?`, []any{"c", "", 10}, "(cluster=? AND id>?)"},
		{"ListAudit by cluster", `SELECT id FROM audit WHERE 1 = 1 AND cluster = ? AND id < ? ORDER BY id DESC LIMIT ?`, []any{"c", 5, 10}, "(cluster=? AND id<?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := s.rdb.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tt.query, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			joined := strings.Join(plan, "; ")
			if !strings.Contains(joined, "SEARCH") || !strings.Contains(joined, tt.want) {
				t.Errorf("plan %q is not an index search on %q", joined, tt.want)
			}
			for _, p := range plan {
				if strings.HasPrefix(p, "SCAN ") && !strings.Contains(p, "USING") {
					t.Errorf("plan %q has a full table scan", joined)
				}
				if strings.Contains(p, "TEMP B-TREE") && tt.name != "FindAssociationByRequestToken" {
					t.Errorf("plan %q sorts in a temporary b-tree", joined)
				}
			}
		})
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "podid.db"))
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

func TestOpenSeesWritesOfAnotherStore(t *testing.T) {
	// Two Stores on one file stand in for two podid processes: the busy
	// timeout and WAL must let them share it.
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "podid.db")
	a, b := openT(t, path), openT(t, path)
	if err := a.CreateCluster(ctx, &identity.Cluster{Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for i, s := range []*Store{a, b} {
		go func() {
			for j := range 50 {
				id := fmt.Sprintf("s%d-%d", i, j)
				if err := s.CreateAssociation(ctx, &identity.Association{ID: id, Cluster: "prod", Namespace: "ns", ServiceAccount: id}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent writer: %v", err)
		}
	}
	list, err := b.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 100 {
		t.Errorf("second store sees %d associations, want 100", len(list))
	}
}

func BenchmarkFindAssociation(b *testing.B) {
	ctx := context.Background()
	s := openT(b, filepath.Join(b.TempDir(), "podid.db"))
	if err := s.CreateCluster(ctx, &identity.Cluster{Name: "prod", Issuer: "https://x"}); err != nil {
		b.Fatal(err)
	}
	const n = 10_000
	// One transaction for the fixture; 10k autocommits would dominate the
	// benchmark's setup time.
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	for i := range n {
		_, err := tx.ExecContext(ctx, `INSERT INTO associations (`+assocColumns+`)
			VALUES (?, 'prod', ?, ?, 'arn:aws:iam::111122223333:role/r', '', 0, '', '', '{"team":"x"}', '', '', ?, ?)`,
			fmt.Sprintf("a-%05d", i), fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("sa-%d", i), now, now)
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
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
