// Package pgtest gives tests a fresh PostgreSQL database on the server
// named by the PODID_TEST_POSTGRES environment variable, a postgres:// URL
// whose role may create databases. scripts/postgres-test.sh starts a
// throwaway server and prints the line that sets it.
//
// Without the variable the tests skip, so that `go test ./...` works on a
// laptop without PostgreSQL; in CI (the CI variable set) they fail instead,
// so the PostgreSQL suite can never be skipped there by accident.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable that names the test server.
const EnvURL = "PODID_TEST_POSTGRES"

// URL returns the server URL from EnvURL. Without it, the test is skipped,
// or fails when the CI variable is set.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u != "" {
		return u
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PODID_TEST_POSTGRES must be set in CI")
	}
	t.Skip(EnvURL + " is not set: skipping the PostgreSQL tests. Run eval \"$(scripts/postgres-test.sh)\" to start a throwaway server and set it.")
	return ""
}

// Fresh creates an empty database podid_test_<random> on the server and
// returns a URL for it, with the credentials and options of EnvURL. The
// database is dropped when the test ends.
//
// The database uses an ICU en-US collation where the server has ICU, so
// that a query relying on the byte order of the C locale shows up.
func Fresh(t testing.TB) string {
	t.Helper()
	return create(t, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'", true)
}

// FreshWith is Fresh with the given CREATE DATABASE options, such as
// "TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'".
func FreshWith(t testing.TB, options string) string {
	t.Helper()
	return create(t, options, false)
}

func create(t testing.TB, options string, fallback bool) string {
	t.Helper()
	base := URL(t)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// Do not echo the value: it holds a password.
		t.Fatalf("%s must be a postgres:// URL", EnvURL)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "podid_test_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := connect(ctx, t, base)
	defer func() { _ = admin.Close(context.Background()) }()

	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+ident+` `+options); err != nil {
		if !fallback {
			t.Fatalf("create test database: %v", err)
		}
		t.Logf("create test database with %s: %v; using the server's defaults", options, err)
		if _, err := admin.Exec(ctx, `CREATE DATABASE `+ident); err != nil {
			t.Fatalf("create test database: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin := connect(ctx, t, base)
		defer func() { _ = admin.Close(context.Background()) }()
		// FORCE ends connections a failed test left open (PostgreSQL 13+).
		if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident+` WITH (FORCE)`); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})

	u.Path = "/" + name
	return u.String()
}

func connect(ctx context.Context, t testing.TB, connURL string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, connURL)
	if err != nil {
		msg := err.Error()
		if u, perr := url.Parse(connURL); perr == nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
		}
		t.Fatalf("connect to the %s server: %s", EnvURL, msg)
	}
	return c
}
