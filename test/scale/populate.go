// Package scale fills a store with many associations, for the scale
// figures in docs/benchmarks.md: the FindAssociation benchmarks of this
// package and the podid server run of ./scaleserver.
//
// A populated store has Layout.Clusters clusters named scale-0, scale-1, …,
// each with Layout.PerCluster associations; association i of a cluster maps
// namespace ns-<i/100> and service account sa-<i%100> (100 service accounts
// per namespace, as in a cluster of many small teams).
package scale

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/store/postgres"
	"github.com/podid/podid/internal/store/sqlite"
)

// Layout is what to put in a store.
type Layout struct {
	Clusters   int
	PerCluster int
	// Issuer and Keys are every cluster's; any values do for lookups.
	Issuer string
	Keys   identity.KeySource
}

// ClusterName is the name of cluster c.
func ClusterName(c int) string { return fmt.Sprintf("scale-%d", c) }

// Key is the namespace and service account of association i.
func Key(i int) (namespace, serviceAccount string) {
	return fmt.Sprintf("ns-%04d", i/100), fmt.Sprintf("sa-%02d", i%100)
}

// RoleARN is the role of association i of cluster c.
func RoleARN(c, i int) string {
	return fmt.Sprintf("arn:aws:iam::111122223333:role/scale-%d-%d", c, i)
}

// row is association i of cluster c as the column values both backends
// store, in the order of insertColumns.
func row(c, i int, now int64) []any {
	ns, sa := Key(i)
	tags, _ := json.Marshal(map[string]string{"team": fmt.Sprintf("team-%d", i%50), "env": "scale"})
	return []any{fmt.Sprintf("a-%d%016d", c, i), ClusterName(c), ns, sa, RoleARN(c, i), string(tags), now, now}
}

var insertColumns = []string{"id", "cluster", "namespace", "service_account", "role_arn", "tags", "created_at", "modified_at"}

func (l Layout) createClusters(ctx context.Context, s identity.Store) error {
	now := time.Now().UTC()
	for c := range l.Clusters {
		err := s.CreateCluster(ctx, &identity.Cluster{Name: ClusterName(c), Issuer: l.Issuer, Keys: l.Keys, CreatedAt: now, ModifiedAt: now})
		if err != nil {
			return fmt.Errorf("create cluster %s: %w", ClusterName(c), err)
		}
	}
	return nil
}

// PopulateSQLite creates the SQLite database at path (it must not exist)
// and fills it, all associations in one transaction.
func PopulateSQLite(ctx context.Context, path string, l Layout) error {
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	if err := l.createClusters(ctx, s); err != nil {
		_ = s.Close()
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	// The driver is registered by package sqlite.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO associations (id, cluster, namespace, service_account, role_arn, tags, created_at, modified_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for c := range l.Clusters {
		for i := range l.PerCluster {
			if _, err := stmt.ExecContext(ctx, row(c, i, now)...); err != nil {
				return fmt.Errorf("insert association %d of cluster %d: %w", i, c, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `ANALYZE`)
	return err
}

// PopulatePostgres fills the empty PostgreSQL database at url, each
// cluster's associations with one COPY.
func PopulatePostgres(ctx context.Context, url string, l Layout) error {
	s, err := postgres.Open(ctx, url)
	if err != nil {
		return err
	}
	err = l.createClusters(ctx, s)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	now := time.Now().UnixNano()
	for c := range l.Clusters {
		i := 0
		src := pgx.CopyFromFunc(func() ([]any, error) {
			if i == l.PerCluster {
				return nil, nil
			}
			i++
			return row(c, i-1, now), nil
		})
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"associations"}, insertColumns, src); err != nil {
			return fmt.Errorf("copy associations of cluster %d: %w", c, err)
		}
	}
	_, err = conn.Exec(ctx, `ANALYZE associations`)
	return err
}
