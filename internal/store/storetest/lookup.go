package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/podid/podid/internal/identity"
)

// testRequestTokens pins down the idempotency-token lookup behind
// CreatePodIdentityAssociation's clientRequestToken.
func testRequestTokens(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster prod", s.CreateCluster(ctx, newCluster("prod")))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))

	withToken := func(id, cluster, sa, token string, created time.Time) *identity.Association {
		a := newAssoc(id, cluster, "ns", sa)
		a.ClientRequestToken = token
		a.CreatedAt, a.ModifiedAt = created, created
		must(t, "CreateAssociation "+id, s.CreateAssociation(ctx, a))
		return a
	}
	find := func(cluster, token string) string {
		t.Helper()
		a, err := s.FindAssociationByRequestToken(ctx, cluster, token)
		if err != nil {
			return fmt.Sprintf("error: %v", err)
		}
		if a.ClientRequestToken != token || a.Cluster != cluster {
			t.Errorf("FindAssociationByRequestToken(%q, %q) returned an association with token %q in cluster %q",
				cluster, token, a.ClientRequestToken, a.Cluster)
		}
		return a.ID
	}

	// A token is only unique per cluster.
	withToken("d-1", "dev", "sa-1", "tok", base)
	// Several associations of one cluster sharing a token (a client reusing
	// it for different requests): the earliest created wins, then the
	// smallest ID, so a retry always gets the same answer.
	withToken("a-1", "prod", "sa-1", "tok", base.Add(2*time.Second))
	withToken("a-2", "prod", "sa-2", "tok", base.Add(time.Second))
	withToken("a-0", "prod", "sa-3", "tok", base.Add(2*time.Second))
	withToken("a-3", "prod", "sa-4", "50%_off", base)
	withToken("a-4", "prod", "sa-5", "", base)

	tests := []struct {
		cluster, token, want string
	}{
		{"prod", "tok", "a-2"},
		{"dev", "tok", "d-1"},
		{"prod", "50%_off", "a-3"},
		// Exact matches only: no case folding, trimming, prefixes or LIKE
		// patterns.
		{"prod", "TOK", ""},
		{"prod", "tok ", ""},
		{"prod", "to", ""},
		{"prod", "50%_of_", ""},
		{"prod", "%", ""},
		{"prod", "", ""},
		{"nope", "tok", ""},
	}
	for _, tt := range tests {
		got := find(tt.cluster, tt.token)
		if tt.want == "" {
			_, err := s.FindAssociationByRequestToken(ctx, tt.cluster, tt.token)
			wantErr(t, fmt.Sprintf("FindAssociationByRequestToken(%q, %q)", tt.cluster, tt.token), err, identity.ErrNotFound)
			continue
		}
		if got != tt.want {
			t.Errorf("FindAssociationByRequestToken(%q, %q) = %s, want %s", tt.cluster, tt.token, got, tt.want)
		}
	}

	must(t, "DeleteAssociation a-2", s.DeleteAssociation(ctx, "prod", "a-2"))
	if got := find("prod", "tok"); got != "a-0" {
		t.Errorf("after deleting the earliest, token lookup = %s, want a-0 (created at the same time as a-1, smaller ID)", got)
	}

	// An update writes the token too: the old one stops matching.
	a0, err := s.GetAssociation(ctx, "prod", "a-0")
	must(t, "GetAssociation a-0", err)
	a0.ClientRequestToken = "tok-2"
	must(t, "UpdateAssociation a-0", s.UpdateAssociation(ctx, a0))
	if got := find("prod", "tok-2"); got != "a-0" {
		t.Errorf("token lookup after update = %s, want a-0", got)
	}
	if got := find("prod", "tok"); got != "a-1" {
		t.Errorf("old token lookup after update = %s, want a-1", got)
	}
	if got := find("dev", "tok"); got != "d-1" {
		t.Errorf("dev token lookup = %s, want d-1", got)
	}
}

// testOrdering checks that names and IDs order byte by byte, as Go
// compares strings, whatever collation the backend's storage defaults to:
// paging with AfterID relies on the backend and the caller agreeing.
func testOrdering(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()

	names := []string{"beta_1", "Zeta", "beta-2", "alpha", "beta1", "Alpha", "ünï", "a", "B", "b"}
	for _, n := range names {
		must(t, "CreateCluster "+n, s.CreateCluster(ctx, newCluster(n)))
	}
	list, err := s.ListClusters(ctx)
	must(t, "ListClusters", err)
	var got []string
	for _, c := range list {
		got = append(got, c.Name)
	}
	if diff := cmp.Diff(slices.Sorted(slices.Values(names)), got); diff != "" {
		t.Errorf("ListClusters order (-want +got):\n%s", diff)
	}

	ids := []string{"a-B", "a-a", "a-_", "a--", "a-0", "A-z", "a-ä", "a-b", "a-A", "a-Ab", "a-aB"}
	for i, id := range ids {
		must(t, "CreateAssociation "+id, s.CreateAssociation(ctx, newAssoc(id, "alpha", "ns", fmt.Sprintf("sa-%d", i))))
	}
	sorted := slices.Sorted(slices.Values(ids))
	var paged []string
	after := ""
	for range len(ids) + 1 {
		page, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "alpha", AfterID: after, Limit: 2})
		must(t, "ListAssociations page", err)
		if len(page) == 0 {
			break
		}
		for _, a := range page {
			paged = append(paged, a.ID)
		}
		after = page[len(page)-1].ID
	}
	if diff := cmp.Diff(sorted, paged); diff != "" {
		t.Errorf("paged association IDs (-want +got):\n%s", diff)
	}
	for _, after := range append(slices.Clone(ids), "a-", "a-a\x00", "a-\u00e4z", "Z") {
		var want []string
		for _, id := range sorted {
			if id > after {
				want = append(want, id)
			}
		}
		list, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "alpha", AfterID: after})
		must(t, "ListAssociations", err)
		var got []string
		for _, a := range list {
			got = append(got, a.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ListAssociations after %q (-want +got):\n%s", after, diff)
		}
	}
}

// testUnstorableKeys looks up keys no backend can hold a row for (a NUL
// byte, invalid UTF-8): the answer is ErrNotFound, not a database error,
// because a token's claims or a request path may carry them.
func testUnstorableKeys(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster", s.CreateCluster(ctx, newCluster("prod")))
	a := newAssoc("a-1", "prod", "ns", "sa")
	a.ClientRequestToken = "tok"
	must(t, "CreateAssociation", s.CreateAssociation(ctx, a))

	for _, k := range []string{"\x00", "prod\x00", "\xff", "pr\xffod"} {
		_, err := s.GetCluster(ctx, k)
		wantErr(t, fmt.Sprintf("GetCluster(%q)", k), err, identity.ErrNotFound)
		_, err = s.GetAssociation(ctx, k, "a-1")
		wantErr(t, fmt.Sprintf("GetAssociation(%q, a-1)", k), err, identity.ErrNotFound)
		_, err = s.GetAssociation(ctx, "prod", k)
		wantErr(t, fmt.Sprintf("GetAssociation(prod, %q)", k), err, identity.ErrNotFound)
		_, err = s.FindAssociation(ctx, "prod", k, "sa")
		wantErr(t, fmt.Sprintf("FindAssociation(prod, %q, sa)", k), err, identity.ErrNotFound)
		_, err = s.FindAssociation(ctx, "prod", "ns", k)
		wantErr(t, fmt.Sprintf("FindAssociation(prod, ns, %q)", k), err, identity.ErrNotFound)
		_, err = s.FindAssociationByRequestToken(ctx, "prod", k)
		wantErr(t, fmt.Sprintf("FindAssociationByRequestToken(prod, %q)", k), err, identity.ErrNotFound)
		wantErr(t, fmt.Sprintf("DeleteAssociation(prod, %q)", k), s.DeleteAssociation(ctx, "prod", k), identity.ErrNotFound)
		wantErr(t, fmt.Sprintf("DeleteCluster(%q)", k), s.DeleteCluster(ctx, k), identity.ErrNotFound)
		list, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: k})
		must(t, fmt.Sprintf("ListAssociations(%q)", k), err)
		if len(list) != 0 {
			t.Errorf("ListAssociations(%q) returned %d associations", k, len(list))
		}
		list, err = s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod", Namespace: k})
		must(t, fmt.Sprintf("ListAssociations(prod, namespace %q)", k), err)
		if len(list) != 0 {
			t.Errorf("ListAssociations(prod, namespace %q) returned %d associations", k, len(list))
		}
		events, err := s.ListAudit(ctx, identity.AuditFilter{Cluster: k})
		must(t, fmt.Sprintf("ListAudit(%q)", k), err)
		if len(events) != 0 {
			t.Errorf("ListAudit(%q) returned %d events", k, len(events))
		}
	}
	if _, err := s.FindAssociation(ctx, "prod", "ns", "sa"); err != nil {
		t.Errorf("FindAssociation after odd lookups: %v", err)
	}
}
