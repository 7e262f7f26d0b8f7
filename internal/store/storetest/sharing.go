package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/podid/podid/internal/identity"
)

// testTwoStores opens two Stores on the same backing storage at once, as
// two podid replicas would, and races them against each other: the
// backend's constraints, not a lock inside one Store, must keep identities
// unique.
func testTwoStores(t *testing.T, h *harness) {
	ctx := t.Context()
	a, b := h.open(), h.open()
	stores := []identity.Store{a, b}

	// Both replicas create the same cluster at once.
	const n = 20
	errs := make([]error, n)
	race := func(create func(i int, s identity.Store) error) {
		t.Helper()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = create(i, stores[i%2])
			})
		}
		close(start)
		wg.Wait()
	}
	exactlyOne := func(what string) {
		t.Helper()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, identity.ErrConflict):
			default:
				t.Errorf("%s %d: error = %v, want nil or ErrConflict", what, i, err)
			}
		}
		if ok != 1 {
			t.Errorf("%s: %d of %d concurrent creates through two stores succeeded, want exactly 1", what, ok, n)
		}
	}

	race(func(i int, s identity.Store) error { return s.CreateCluster(ctx, newCluster("prod")) })
	exactlyOne("CreateCluster of one name")

	race(func(i int, s identity.Store) error {
		return s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("a-%02d", i), "prod", "ns", "sa"))
	})
	exactlyOne("CreateAssociation of one triple")

	race(func(i int, s identity.Store) error {
		return s.CreateAssociation(ctx, newAssoc("a-same", "prod", "ns", fmt.Sprintf("sa-%02d", i)))
	})
	exactlyOne("CreateAssociation of one ID")

	// Distinct triples through both stores must all succeed: writers queue
	// or run side by side, they do not fail.
	race(func(i int, s identity.Store) error {
		return s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("b-%02d", i), "prod", "ns2", fmt.Sprintf("sa-%02d", i)))
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent create of distinct triple %d through two stores: %v", i, err)
		}
	}

	// Each store sees everything the other wrote.
	listA, err := a.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations through a", err)
	listB, err := b.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations through b", err)
	if len(listA) != n+2 {
		t.Errorf("ListAssociations through a returned %d associations, want %d", len(listA), n+2)
	}
	if diff := cmp.Diff(listA, listB, opts); diff != "" {
		t.Errorf("the two stores list different associations (-a +b):\n%s", diff)
	}

	got, err := a.FindAssociation(ctx, "prod", "ns2", "sa-07")
	must(t, "FindAssociation through a", err)
	upd := *got
	upd.RoleARN = "arn:aws:iam::111122223333:role/updated-through-b"
	upd.ModifiedAt = base.Add(3600e9)
	must(t, "UpdateAssociation through b", b.UpdateAssociation(ctx, &upd))
	got, err = a.GetAssociation(ctx, "prod", upd.ID)
	must(t, "GetAssociation through a", err)
	if diff := cmp.Diff(&upd, got, opts); diff != "" {
		t.Errorf("a does not see b's update (-want +got):\n%s", diff)
	}

	must(t, "DeleteCluster through b", b.DeleteCluster(ctx, "prod"))
	_, err = a.FindAssociation(ctx, "prod", "ns2", "sa-07")
	wantErr(t, "FindAssociation through a after b deleted the cluster", err, identity.ErrNotFound)
	wantErr(t, "CreateAssociation through a after b deleted the cluster",
		a.CreateAssociation(ctx, newAssoc("c-1", "prod", "ns", "sa")), identity.ErrNotFound)
}
