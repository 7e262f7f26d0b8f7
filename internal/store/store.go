// Package store opens the identity.Store backend a URL names. Each backend
// lives in its own subpackage and passes internal/store/storetest.
//
// Accepted URLs:
//
//	sqlite:///var/lib/podid/podid.db   SQLite, absolute path (three slashes)
//	sqlite://data/podid.db             SQLite, path relative to the working directory
//	/var/lib/podid/podid.db            a bare path is SQLite too
//	postgres://user:pw@host:5432/db?sslmode=verify-full
//	postgresql://…                     PostgreSQL; see internal/store/postgres
//
// Everything after "sqlite://" is the path, taken literally: no query
// parameters, no percent-decoding. A PostgreSQL URL goes to pgx unchanged.
//
// A PostgreSQL URL may hold a password: log Redacted(url), never the URL.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/postgres"
	"github.com/podid/podid/internal/store/sqlite"
)

// Backend names returned by parse.
const (
	backendSQLite   = "sqlite"
	backendPostgres = "postgres"
)

// Open opens the store the URL names; see the package doc for the forms.
func Open(ctx context.Context, url string) (identity.Store, error) {
	backend, target, err := parse(url)
	if err != nil {
		return nil, err
	}
	switch backend {
	case backendSQLite:
		s, err := sqlite.Open(ctx, target)
		if err != nil {
			return nil, err
		}
		return s, nil
	case backendPostgres:
		s, err := postgres.Open(ctx, target)
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("store: no backend %q", backend)
	}
}

// parse splits a store URL into the backend and what the backend opens: a
// file path for SQLite, the whole URL for PostgreSQL.
func parse(url string) (backend, target string, err error) {
	if strings.TrimSpace(url) == "" {
		return "", "", errors.New("store: empty store URL; want sqlite:///path/to/podid.db")
	}
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		// A bare path.
		return backendSQLite, url, nil
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		if rest == "" {
			return "", "", fmt.Errorf("store: %q names no database file; want sqlite:///abs/path/podid.db or sqlite://relative/path.db", url)
		}
		return backendSQLite, rest, nil
	case "postgres", "postgresql":
		return backendPostgres, url, nil
	default:
		// The URL may carry a password; name only the scheme.
		return "", "", fmt.Errorf("store: unsupported store URL scheme %q; accepted schemes are sqlite:// (or a bare file path), postgres:// and postgresql://", scheme)
	}
}

// Redacted returns the store URL with any password replaced by "xxxxx", for
// logs and messages. A URL it cannot parse is not repeated at all.
func Redacted(storeURL string) string {
	backend, _, err := parse(storeURL)
	if err != nil {
		return "(invalid store URL)"
	}
	if backend != backendPostgres {
		return storeURL
	}
	u, err := url.Parse(storeURL)
	if err != nil {
		scheme, _, _ := strings.Cut(storeURL, "://")
		return scheme + "://(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
