package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/server"
	"github.com/podid/podid/internal/store/sqlite"
)

// failingStore is a store whose database went away: every call fails the
// way a driver does when its connection is gone.
type failingStore struct{ identity.Store }

var errGone = &storeGone{}

type storeGone struct{}

func (*storeGone) Error() string { return "sql: database is closed" }

func (failingStore) CreateAssociation(context.Context, *identity.Association) error { return errGone }
func (failingStore) FindAssociation(context.Context, string, string, string) (*identity.Association, error) {
	return nil, errGone
}
func (failingStore) GetCluster(context.Context, string) (*identity.Cluster, error) {
	return nil, errGone
}
func (failingStore) ListAssociations(context.Context, identity.AssociationFilter) ([]identity.Association, error) {
	return nil, errGone
}

// TestStoreUnreachable: with the database gone, every API answers a 5xx
// in AWS shape with a message that says what happened and that nothing
// changed, and the server recovers when the database is back.
func TestStoreUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podid.db")
	real, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { real.Close() })
	var down atomic.Bool
	e := newEnvWith(t, func(cfg *identity.Config, _ *server.Config) {
		cfg.Store = switchStore{real: real, down: &down}
	})
	e.registerFixtureClusters(t)
	e.createAssociation(t, "cluster-a", "shop", "checkout", nil)

	down.Store(true)
	admin := e.keys[auth.ScopeAdmin]
	for _, tc := range []struct {
		name, service, method, path, body, wantType string
	}{
		{"create", "eks", "POST", "/clusters/cluster-a/pod-identity-associations", `{"namespace":"a","serviceAccount":"b","roleArn":"` + testRole + `"}`, "ServerException"},
		{"list", "eks", "GET", "/clusters/cluster-a/pod-identity-associations", "", "ServerException"},
		{"assume", "eks-auth", "POST", "/clusters/cluster-a/assume-role-for-pod-identity", tokenBody(fixture(t, "cluster-a/token-pod-bound.jwt")), "InternalServerException"},
	} {
		status, typ, body := e.signedRaw(t, admin, tc.service, tc.method, tc.path, []byte(tc.body))
		var eb api.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if status != http.StatusInternalServerError || typ != tc.wantType || !strings.Contains(eb.Message, "store failed") || strings.Contains(eb.Message, "database is closed") {
			t.Errorf("%s with the store down: %d %s %q", tc.name, status, typ, eb.Message)
		}
	}
	down.Store(false)
	as, err := real.ListAssociations(context.Background(), identity.AssociationFilter{Cluster: "cluster-a"})
	if err != nil || len(as) != 1 {
		t.Fatalf("after the outage the store has %d associations (%v), want the 1 from before", len(as), err)
	}
	if _, err := e.apiClient(e.agent).AssumeRoleForPodIdentity(context.Background(), "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: fixture(t, "cluster-a/token-pod-bound.jwt")}); err != nil {
		t.Errorf("no recovery after the store came back: %v", err)
	}
}

// switchStore sends calls to real, or to a failing store while *down.
type switchStore struct {
	real *sqlite.Store
	down *atomic.Bool
}

func (s switchStore) pick() identity.Store {
	if s.down.Load() {
		return failingStore{s.real}
	}
	return s.real
}

func (s switchStore) CreateCluster(ctx context.Context, c *identity.Cluster) error {
	return s.pick().CreateCluster(ctx, c)
}
func (s switchStore) UpdateCluster(ctx context.Context, c *identity.Cluster) error {
	return s.pick().UpdateCluster(ctx, c)
}
func (s switchStore) GetCluster(ctx context.Context, n string) (*identity.Cluster, error) {
	return s.pick().GetCluster(ctx, n)
}
func (s switchStore) ListClusters(ctx context.Context) ([]identity.Cluster, error) {
	return s.pick().ListClusters(ctx)
}
func (s switchStore) DeleteCluster(ctx context.Context, n string) error {
	return s.pick().DeleteCluster(ctx, n)
}
func (s switchStore) CreateAssociation(ctx context.Context, a *identity.Association) error {
	return s.pick().CreateAssociation(ctx, a)
}
func (s switchStore) GetAssociation(ctx context.Context, c, id string) (*identity.Association, error) {
	return s.pick().GetAssociation(ctx, c, id)
}
func (s switchStore) FindAssociation(ctx context.Context, c, ns, sa string) (*identity.Association, error) {
	return s.pick().FindAssociation(ctx, c, ns, sa)
}
func (s switchStore) FindAssociationByRequestToken(ctx context.Context, c, tok string) (*identity.Association, error) {
	return s.pick().FindAssociationByRequestToken(ctx, c, tok)
}
func (s switchStore) UpdateAssociation(ctx context.Context, a *identity.Association) error {
	return s.pick().UpdateAssociation(ctx, a)
}
func (s switchStore) DeleteAssociation(ctx context.Context, c, id string) error {
	return s.pick().DeleteAssociation(ctx, c, id)
}
func (s switchStore) ListAssociations(ctx context.Context, f identity.AssociationFilter) ([]identity.Association, error) {
	return s.pick().ListAssociations(ctx, f)
}
func (s switchStore) AppendAudit(ctx context.Context, e *identity.AuditEvent) error {
	return s.pick().AppendAudit(ctx, e)
}
func (s switchStore) ListAudit(ctx context.Context, f identity.AuditFilter) ([]identity.AuditEvent, error) {
	return s.pick().ListAudit(ctx, f)
}
func (s switchStore) Close() error { return nil }
