// Package store opens the identity.Store backend a URL names. Each backend
// lives in its own subpackage and passes internal/store/storetest.
//
// Accepted URLs:
//
//	sqlite:///var/lib/podid/podid.db   SQLite, absolute path (three slashes)
//	sqlite://data/podid.db             SQLite, path relative to the working directory
//	/var/lib/podid/podid.db            a bare path is SQLite too
//	postgres://… or postgresql://…     PostgreSQL (not available in this build yet)
//
// Everything after "sqlite://" is the path, taken literally: no query
// parameters, no percent-decoding.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/sqlite"
)

// ErrPostgresUnavailable is returned for postgres:// URLs until the
// PostgreSQL backend is built in.
var ErrPostgresUnavailable = errors.New("the PostgreSQL store is not available in this build yet; use sqlite:///path/to/podid.db")

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
		return nil, ErrPostgresUnavailable
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
