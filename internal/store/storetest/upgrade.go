package storetest

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/podid/podid/internal/identity"
)

// MigrateTo brings the backing storage of a fresh Opener to schema version
// v (0 <= v <= the latest) without opening a Store, standing in for a
// database last written by an older podid. Version 0 is a database whose
// version table exists but holds no schema yet.
type MigrateTo func(t *testing.T, v int)

// RunUpgrades checks that a Store opens, and works, on a database at every
// schema version from nothing at all up to latest, the version the
// backend's code writes. fresh is called once per subtest and must return
// an Opener on new, empty backing storage and a MigrateTo for that same
// storage.
func RunUpgrades(t *testing.T, latest int, fresh func(t *testing.T) (Opener, MigrateTo)) {
	t.Run("FromEmpty", func(t *testing.T) {
		opener, _ := fresh(t)
		testUpgrade(t, &harness{t: t, opener: opener})
	})
	for v := range latest + 1 {
		t.Run(fmt.Sprintf("FromVersion%d", v), func(t *testing.T) {
			opener, migrateTo := fresh(t)
			migrateTo(t, v)
			testUpgrade(t, &harness{t: t, opener: opener})
		})
	}
}

// testUpgrade writes one of everything through the upgraded Store and
// reads it back through a reopened one.
func testUpgrade(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	c := newCluster("prod")
	must(t, "CreateCluster", s.CreateCluster(ctx, c))
	a := newAssoc("a-1", "prod", "ns", "sa")
	a.Tags = map[string]string{"team": "payments"}
	a.ClientRequestToken = "tok"
	must(t, "CreateAssociation", s.CreateAssociation(ctx, a))
	e := &identity.AuditEvent{Time: base, Cluster: "prod", Outcome: identity.OutcomeIssued}
	must(t, "AppendAudit", s.AppendAudit(ctx, e))
	must(t, "Close", s.Close())

	s = h.open()
	gotC, err := s.GetCluster(ctx, "prod")
	must(t, "GetCluster after reopen", err)
	if diff := cmp.Diff(c, gotC, opts); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
	gotA, err := s.FindAssociationByRequestToken(ctx, "prod", "tok")
	must(t, "FindAssociationByRequestToken after reopen", err)
	if diff := cmp.Diff(a, gotA, opts); diff != "" {
		t.Errorf("association (-want +got):\n%s", diff)
	}
	events, err := s.ListAudit(ctx, identity.AuditFilter{})
	must(t, "ListAudit after reopen", err)
	if diff := cmp.Diff([]identity.AuditEvent{*e}, events, opts); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}
