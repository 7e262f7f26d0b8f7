package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/postgres"
	"github.com/podid/podid/internal/store/postgres/pgtest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		url         string
		wantBackend string
		wantTarget  string
		wantErr     string // substring; "" means success
	}{
		{"sqlite:///var/lib/podid/podid.db", backendSQLite, "/var/lib/podid/podid.db", ""},
		{"sqlite://data/podid.db", backendSQLite, "data/podid.db", ""},
		{"sqlite://podid.db", backendSQLite, "podid.db", ""},
		{"SQLite:///x.db", backendSQLite, "/x.db", ""},
		{"sqlite:///dir with space/p?d.db", backendSQLite, "/dir with space/p?d.db", ""},
		{"/var/lib/podid/podid.db", backendSQLite, "/var/lib/podid/podid.db", ""},
		{"podid.db", backendSQLite, "podid.db", ""},
		{"./data/podid.db", backendSQLite, "./data/podid.db", ""},
		{"postgres://user:pw@db:5432/podid?sslmode=require", backendPostgres, "postgres://user:pw@db:5432/podid?sslmode=require", ""},
		{"postgresql://db/podid", backendPostgres, "postgresql://db/podid", ""},
		{"PostgreSQL://db/podid", backendPostgres, "PostgreSQL://db/podid", ""},
		{"", "", "", "empty store URL"},
		{"   ", "", "", "empty store URL"},
		{"sqlite://", "", "", "names no database file"},
		{"mysql://user:secret@db/podid", "", "", `unsupported store URL scheme "mysql"`},
		{"file:///x.db", "", "", "accepted schemes are sqlite://"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			backend, target, err := parse(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q leaks the URL's password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tt.url, err)
			}
			if backend != tt.wantBackend || target != tt.wantTarget {
				t.Errorf("parse(%q) = (%q, %q), want (%q, %q)", tt.url, backend, target, tt.wantBackend, tt.wantTarget)
			}
		})
	}
}

func TestOpenSQLite(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "abs", "podid.db")
	t.Chdir(dir)
	for _, url := range []string{"sqlite://" + abs, "sqlite://rel/podid.db", filepath.Join(dir, "bare.db")} {
		s, err := Open(t.Context(), url)
		if err != nil {
			t.Fatalf("Open(%q): %v", url, err)
		}
		if err := s.CreateCluster(t.Context(), &identity.Cluster{Name: "prod"}); err != nil {
			t.Errorf("CreateCluster via %q: %v", url, err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for _, p := range []string{abs, filepath.Join(dir, "rel", "podid.db"), filepath.Join(dir, "bare.db")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("database file: %v", err)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	url := pgtest.Fresh(t)
	for _, u := range []string{url, "postgresql" + strings.TrimPrefix(url, "postgres")} {
		s, err := Open(t.Context(), u)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if _, ok := s.(*postgres.Store); !ok {
			t.Errorf("Open returned a %T, want *postgres.Store", s)
		}
		if err := s.CreateCluster(t.Context(), &identity.Cluster{Name: "prod"}); err != nil && !errors.Is(err, identity.ErrConflict) {
			t.Errorf("CreateCluster: %v", err)
		}
		if _, err := s.GetCluster(t.Context(), "prod"); err != nil {
			t.Errorf("GetCluster: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestOpenPostgresErrorHidesPassword(t *testing.T) {
	// Nothing listens on port 1: the connection is refused at once.
	for _, url := range []string{
		"postgres://podid:s3cret-pw@127.0.0.1:1/podid?sslmode=disable&connect_timeout=5",
		"postgresql://podid:s3cret-pw@127.0.0.1:notaport/podid",
	} {
		s, err := Open(t.Context(), url)
		if err == nil {
			_ = s.Close()
			t.Fatalf("Open(%q) succeeded", Redacted(url))
		}
		if s != nil {
			t.Errorf("Open(%q) returned a store with an error", Redacted(url))
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("error %q holds the password", err)
		}
	}
}

func TestRedacted(t *testing.T) {
	tests := []struct{ url, want string }{
		{"postgres://podid:s3cret@db:5432/podid?sslmode=require", "postgres://podid:xxxxx@db:5432/podid?sslmode=require"},
		{"postgresql://podid@db/podid", "postgresql://podid@db/podid"},
		{"postgres://db/podid?user=u&password=s3cret", "postgres://db/podid?password=xxxxx&user=u"},
		{"postgres://db/podid?sslpassword=s3cret", "postgres://db/podid?sslpassword=xxxxx"},
		{"postgres://podid:s3cret@[::1/podid", "postgres://(unparsable URL)"},
		{"sqlite:///var/lib/podid/podid.db", "sqlite:///var/lib/podid/podid.db"},
		{"/var/lib/podid/podid.db", "/var/lib/podid/podid.db"},
		{"mysql://u:s3cret@db/podid", "(invalid store URL)"},
	}
	for _, tt := range tests {
		if got := Redacted(tt.url); got != tt.want {
			t.Errorf("Redacted(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	s, err := Open(t.Context(), "redis://cache:6379")
	if err == nil || !strings.Contains(err.Error(), "sqlite://") || !strings.Contains(err.Error(), "postgres://") {
		t.Errorf("Open error = %v, want one naming the accepted schemes", err)
	}
	if s != nil {
		t.Error("Open returned a store")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"sqlite:///a.db", "sqlite://a.db", "a.db", "postgres://x", "x://y", "", "://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, url string) {
		backend, target, err := parse(url)
		if err != nil {
			return
		}
		switch backend {
		case backendSQLite:
			if target == "" {
				t.Errorf("parse(%q) gave an empty SQLite path", url)
			}
		case backendPostgres:
			if target != url {
				t.Errorf("parse(%q) changed the PostgreSQL URL to %q", url, target)
			}
		default:
			t.Errorf("parse(%q) gave unknown backend %q", url, backend)
		}
	})
}
