// Package storetest is the conformance suite every identity.Store backend
// must pass. A backend's test calls Run with a function that makes fresh,
// empty backing storage and returns an Opener for it:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Opener {
//			path := filepath.Join(t.TempDir(), "podid.db")
//			return func(t *testing.T) identity.Store {
//				s, err := sqlite.Open(t.Context(), path)
//				if err != nil {
//					t.Fatal(err)
//				}
//				return s
//			}
//		})
//	}
//
// The suite pins down the behaviour the domain relies on beyond the
// identity.Store doc comments:
//
//   - Times come back in UTC, equal to what was written to at least the
//     millisecond.
//   - A nil and an empty tag map are interchangeable: either may come back
//     for either.
//   - UpdateCluster writes every field except Name and CreatedAt;
//     UpdateAssociation every field except ID, Cluster and CreatedAt.
//   - Association IDs are unique across clusters. GetAssociation,
//     UpdateAssociation and DeleteAssociation with the wrong cluster return
//     ErrNotFound.
//   - CreateAssociation in an unknown cluster returns ErrNotFound.
//   - FindAssociationByRequestToken never matches an empty token.
//   - ListAssociations of an unknown cluster is empty, not an error.
//   - ListClusters is ordered by name and ListAssociations by ID, byte by
//     byte as Go compares strings, whatever the storage's collation.
//   - FindAssociationByRequestToken matches the token exactly; of several
//     associations sharing it in one cluster, the earliest created (then
//     the smallest ID) wins.
//   - Looking up a key no backend can store (a NUL byte, invalid UTF-8) is
//     ErrNotFound, not a database error.
//   - Two Stores open at once on the same storage (two replicas) see each
//     other's writes, and the storage, not the Store, keeps names, IDs and
//     (cluster, namespace, service account) unique between them.
//   - AppendAudit sets the event's ID; IDs increase, also across a reopen
//     and between two Stores, and paging newest first with BeforeID is
//     stable while events are appended.
//   - Audit events survive the deletion of their cluster.
package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/podid/podid/internal/identity"
)

// Opener opens a Store on one backing database. Run may call it again,
// after closing the Store it returned or while that Store is still open;
// every Store it returns must share the same storage and see everything the
// others wrote. Run closes every Store it opens.
type Opener func(t *testing.T) identity.Store

// Run runs the suite. fresh is called once per subtest and must return an
// Opener on new, empty backing storage.
func Run(t *testing.T, fresh func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Clusters", testClusters},
		{"ClusterKeySources", testClusterKeySources},
		{"Associations", testAssociations},
		{"AssociationUniqueness", testAssociationUniqueness},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ClusterDeleteCascades", testCascade},
		{"ListAssociations", testListAssociations},
		{"Tags", testTags},
		{"Times", testTimes},
		{"Audit", testAudit},
		{"Reopen", testReopen},
		{"TwoStores", testTwoStores},
		{"RequestTokens", testRequestTokens},
		{"Ordering", testOrdering},
		{"UnstorableKeys", testUnstorableKeys},
		{"Ledger", testLedger},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{t: t, opener: fresh(t)}
			tt.fn(t, h)
		})
	}
}

// harness tracks the Stores a subtest opened so each is closed exactly once.
type harness struct {
	t      *testing.T
	opener Opener
}

func (h *harness) open() identity.Store {
	h.t.Helper()
	s := h.opener(h.t)
	var once sync.Once
	closeFn := func() error {
		var err error
		once.Do(func() { err = s.Close() })
		return err
	}
	h.t.Cleanup(func() {
		if err := closeFn(); err != nil {
			h.t.Errorf("Close: %v", err)
		}
	})
	return &closingStore{Store: s, close: closeFn}
}

// closingStore makes Close idempotent so that the cleanup does not close
// twice a Store the test already closed.
type closingStore struct {
	identity.Store
	close func() error
}

func (c *closingStore) Close() error { return c.close() }

// base is a time with sub-millisecond digits in a non-UTC zone, so the
// suite sees both precision loss and zone handling.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535_897_932, time.FixedZone("IST", 5*3600+1800))

// timeOpt compares times to the millisecond, the precision every backend
// must keep.
var timeOpt = cmp.Comparer(func(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() && b.IsZero()
	}
	d := a.Sub(b)
	return d > -time.Millisecond && d < time.Millisecond
})

// opts are the cmp options for comparing what a Store returned.
var opts = cmp.Options{timeOpt, cmpopts.EquateEmpty()}

func mustUTC(t *testing.T, what string, ts ...time.Time) {
	t.Helper()
	for _, x := range ts {
		if !x.IsZero() && x.Location() != time.UTC {
			t.Errorf("%s: time %v is in %v, want UTC", what, x, x.Location())
		}
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error = %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func newCluster(name string) *identity.Cluster {
	return &identity.Cluster{
		Name:       name,
		Issuer:     "https://oidc.example.com/" + name,
		Keys:       identity.KeySource{Kind: identity.KeysJWKSURL, URL: "https://oidc.example.com/" + name + "/keys"},
		CreatedAt:  base,
		ModifiedAt: base,
	}
}

func newAssoc(id, cluster, ns, sa string) *identity.Association {
	return &identity.Association{
		ID:             id,
		Cluster:        cluster,
		Namespace:      ns,
		ServiceAccount: sa,
		RoleARN:        "arn:aws:iam::111122223333:role/" + sa,
		OwnerARN:       "arn:aws:iam::111122223333:user/admin",
		CreatedAt:      base,
		ModifiedAt:     base,
	}
}

func testClusters(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()

	_, err := s.GetCluster(ctx, "prod")
	wantErr(t, "GetCluster of missing cluster", err, identity.ErrNotFound)

	prod := newCluster("prod")
	must(t, "CreateCluster", s.CreateCluster(ctx, prod))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))
	must(t, "CreateCluster staging", s.CreateCluster(ctx, newCluster("staging")))

	dup := newCluster("prod")
	dup.Issuer = "https://other.example.com"
	wantErr(t, "CreateCluster of taken name", s.CreateCluster(ctx, dup), identity.ErrConflict)

	got, err := s.GetCluster(ctx, "prod")
	must(t, "GetCluster", err)
	if diff := cmp.Diff(prod, got, opts); diff != "" {
		t.Errorf("GetCluster (-want +got):\n%s", diff)
	}
	mustUTC(t, "GetCluster", got.CreatedAt, got.ModifiedAt)

	list, err := s.ListClusters(ctx)
	must(t, "ListClusters", err)
	var names []string
	for _, c := range list {
		names = append(names, c.Name)
	}
	if diff := cmp.Diff([]string{"dev", "prod", "staging"}, names); diff != "" {
		t.Errorf("ListClusters names (-want +got):\n%s", diff)
	}

	upd := *prod
	upd.Issuer = "https://oidc.example.com/prod-2"
	upd.Keys = identity.KeySource{Kind: identity.KeysPEM, PEM: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}
	upd.ModifiedAt = base.Add(time.Hour)
	upd.CreatedAt = base.Add(48 * time.Hour) // must be ignored
	must(t, "UpdateCluster", s.UpdateCluster(ctx, &upd))
	got, err = s.GetCluster(ctx, "prod")
	must(t, "GetCluster after update", err)
	want := upd
	want.CreatedAt = prod.CreatedAt
	if diff := cmp.Diff(&want, got, opts); diff != "" {
		t.Errorf("GetCluster after update (-want +got):\n%s", diff)
	}

	wantErr(t, "UpdateCluster of missing cluster", s.UpdateCluster(ctx, newCluster("nope")), identity.ErrNotFound)

	must(t, "DeleteCluster", s.DeleteCluster(ctx, "prod"))
	_, err = s.GetCluster(ctx, "prod")
	wantErr(t, "GetCluster after delete", err, identity.ErrNotFound)
	wantErr(t, "DeleteCluster again", s.DeleteCluster(ctx, "prod"), identity.ErrNotFound)
	list, err = s.ListClusters(ctx)
	must(t, "ListClusters after delete", err)
	if len(list) != 2 {
		t.Errorf("ListClusters after delete returned %d clusters, want 2", len(list))
	}
}

func testClusterKeySources(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	sources := []identity.KeySource{
		{Kind: identity.KeysJWKS, JWKS: `{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}`},
		{Kind: identity.KeysJWKSFile, Path: "/etc/podid/jwks/prod.json"},
		{Kind: identity.KeysJWKSURL, URL: "https://oidc.example.com/keys", CACert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
		{Kind: identity.KeysKubernetes, URL: "https://10.0.0.1:6443", BearerToken: "eyJhbGciOi.secret.sig", CACert: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"},
		{Kind: identity.KeysPEM, PEM: "-----BEGIN PUBLIC KEY-----\nMFkw\"'\\\n-----END PUBLIC KEY-----\n"},
	}
	for i, ks := range sources {
		c := newCluster(fmt.Sprintf("c%d", i))
		c.Keys = ks
		must(t, "CreateCluster", s.CreateCluster(ctx, c))
		got, err := s.GetCluster(ctx, c.Name)
		must(t, "GetCluster", err)
		if diff := cmp.Diff(ks, got.Keys); diff != "" {
			t.Errorf("key source %s round trip (-want +got):\n%s", ks.Kind, diff)
		}
	}
	list, err := s.ListClusters(ctx)
	must(t, "ListClusters", err)
	if len(list) != len(sources) {
		t.Fatalf("ListClusters returned %d clusters, want %d", len(list), len(sources))
	}
	for i, c := range list {
		if diff := cmp.Diff(sources[i], c.Keys); diff != "" {
			t.Errorf("ListClusters key source %d (-want +got):\n%s", i, diff)
		}
	}
}

func testAssociations(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster prod", s.CreateCluster(ctx, newCluster("prod")))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))

	wantErr(t, "CreateAssociation in unknown cluster",
		s.CreateAssociation(ctx, newAssoc("a-0", "nope", "ns", "sa")), identity.ErrNotFound)

	a := &identity.Association{
		ID:                 "a-0123456789abcdef0",
		Cluster:            "prod",
		Namespace:          "payments",
		ServiceAccount:     "api",
		RoleARN:            "arn:aws:iam::111122223333:role/payments-api",
		TargetRoleARN:      "arn:aws:iam::444455556666:role/target",
		DisableSessionTags: true,
		Policy:             `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`,
		ExternalID:         "ext-123",
		Tags:               map[string]string{"team": "payments", "env": "prod"},
		OwnerARN:           "arn:aws:iam::111122223333:user/alice",
		ClientRequestToken: "req-token-1",
		CreatedAt:          base,
		ModifiedAt:         base.Add(time.Minute),
	}
	must(t, "CreateAssociation", s.CreateAssociation(ctx, a))
	other := newAssoc("a-other", "prod", "payments", "worker")
	must(t, "CreateAssociation other", s.CreateAssociation(ctx, other))

	got, err := s.GetAssociation(ctx, "prod", a.ID)
	must(t, "GetAssociation", err)
	if diff := cmp.Diff(a, got, opts); diff != "" {
		t.Errorf("GetAssociation (-want +got):\n%s", diff)
	}
	mustUTC(t, "GetAssociation", got.CreatedAt, got.ModifiedAt)

	_, err = s.GetAssociation(ctx, "dev", a.ID)
	wantErr(t, "GetAssociation in wrong cluster", err, identity.ErrNotFound)
	_, err = s.GetAssociation(ctx, "prod", "a-missing")
	wantErr(t, "GetAssociation of missing id", err, identity.ErrNotFound)

	got, err = s.FindAssociation(ctx, "prod", "payments", "api")
	must(t, "FindAssociation", err)
	if diff := cmp.Diff(a, got, opts); diff != "" {
		t.Errorf("FindAssociation (-want +got):\n%s", diff)
	}
	for _, k := range [][3]string{
		{"dev", "payments", "api"},
		{"prod", "other", "api"},
		{"prod", "payments", "other"},
		{"prod", "api", "payments"},
	} {
		_, err = s.FindAssociation(ctx, k[0], k[1], k[2])
		wantErr(t, fmt.Sprintf("FindAssociation(%q, %q, %q)", k[0], k[1], k[2]), err, identity.ErrNotFound)
	}

	got, err = s.FindAssociationByRequestToken(ctx, "prod", "req-token-1")
	must(t, "FindAssociationByRequestToken", err)
	if diff := cmp.Diff(a, got, opts); diff != "" {
		t.Errorf("FindAssociationByRequestToken (-want +got):\n%s", diff)
	}
	_, err = s.FindAssociationByRequestToken(ctx, "dev", "req-token-1")
	wantErr(t, "FindAssociationByRequestToken in wrong cluster", err, identity.ErrNotFound)
	_, err = s.FindAssociationByRequestToken(ctx, "prod", "req-token-2")
	wantErr(t, "FindAssociationByRequestToken of unknown token", err, identity.ErrNotFound)
	// other was created without a token; "" must not find it.
	_, err = s.FindAssociationByRequestToken(ctx, "prod", "")
	wantErr(t, "FindAssociationByRequestToken of empty token", err, identity.ErrNotFound)

	upd := *a
	upd.RoleARN = "arn:aws:iam::111122223333:role/payments-api-v2"
	upd.TargetRoleARN = ""
	upd.DisableSessionTags = false
	upd.Policy = ""
	upd.ExternalID = "ext-456"
	upd.Tags = map[string]string{"team": "payments-core"}
	upd.ModifiedAt = base.Add(2 * time.Hour)
	upd.CreatedAt = base.Add(72 * time.Hour) // must be ignored
	must(t, "UpdateAssociation", s.UpdateAssociation(ctx, &upd))
	got, err = s.GetAssociation(ctx, "prod", a.ID)
	must(t, "GetAssociation after update", err)
	want := upd
	want.CreatedAt = a.CreatedAt
	if diff := cmp.Diff(&want, got, opts); diff != "" {
		t.Errorf("GetAssociation after update (-want +got):\n%s", diff)
	}
	got, err = s.FindAssociation(ctx, "prod", "payments", "api")
	must(t, "FindAssociation after update", err)
	if got.RoleARN != upd.RoleARN {
		t.Errorf("FindAssociation after update: RoleARN = %q, want %q", got.RoleARN, upd.RoleARN)
	}

	missing := newAssoc("a-missing", "prod", "x", "y")
	wantErr(t, "UpdateAssociation of missing id", s.UpdateAssociation(ctx, missing), identity.ErrNotFound)
	wrong := upd
	wrong.Cluster = "dev"
	wantErr(t, "UpdateAssociation in wrong cluster", s.UpdateAssociation(ctx, &wrong), identity.ErrNotFound)

	wantErr(t, "DeleteAssociation in wrong cluster", s.DeleteAssociation(ctx, "dev", a.ID), identity.ErrNotFound)
	must(t, "DeleteAssociation", s.DeleteAssociation(ctx, "prod", a.ID))
	_, err = s.GetAssociation(ctx, "prod", a.ID)
	wantErr(t, "GetAssociation after delete", err, identity.ErrNotFound)
	_, err = s.FindAssociation(ctx, "prod", "payments", "api")
	wantErr(t, "FindAssociation after delete", err, identity.ErrNotFound)
	_, err = s.FindAssociationByRequestToken(ctx, "prod", "req-token-1")
	wantErr(t, "FindAssociationByRequestToken after delete", err, identity.ErrNotFound)
	wantErr(t, "DeleteAssociation again", s.DeleteAssociation(ctx, "prod", a.ID), identity.ErrNotFound)

	if _, err := s.GetAssociation(ctx, "prod", other.ID); err != nil {
		t.Errorf("GetAssociation of the untouched association: %v", err)
	}
}

func testAssociationUniqueness(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster prod", s.CreateCluster(ctx, newCluster("prod")))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))

	must(t, "CreateAssociation", s.CreateAssociation(ctx, newAssoc("a-1", "prod", "ns", "sa")))
	wantErr(t, "CreateAssociation of taken triple",
		s.CreateAssociation(ctx, newAssoc("a-2", "prod", "ns", "sa")), identity.ErrConflict)
	wantErr(t, "CreateAssociation of taken id",
		s.CreateAssociation(ctx, newAssoc("a-1", "prod", "ns", "other")), identity.ErrConflict)
	wantErr(t, "CreateAssociation of id taken in another cluster",
		s.CreateAssociation(ctx, newAssoc("a-1", "dev", "ns", "other")), identity.ErrConflict)

	// The same namespace and service account in another cluster is a
	// different identity.
	must(t, "CreateAssociation of same ns/sa in another cluster", s.CreateAssociation(ctx, newAssoc("a-3", "dev", "ns", "sa")))
	got, err := s.FindAssociation(ctx, "dev", "ns", "sa")
	must(t, "FindAssociation in dev", err)
	if got.ID != "a-3" {
		t.Errorf("FindAssociation in dev: ID = %q, want a-3", got.ID)
	}
	got, err = s.FindAssociation(ctx, "prod", "ns", "sa")
	must(t, "FindAssociation in prod", err)
	if got.ID != "a-1" {
		t.Errorf("FindAssociation in prod: ID = %q, want a-1", got.ID)
	}

	must(t, "CreateAssociation a-4", s.CreateAssociation(ctx, newAssoc("a-4", "prod", "ns", "sa2")))
	moved := newAssoc("a-4", "prod", "ns", "sa")
	wantErr(t, "UpdateAssociation onto a taken triple", s.UpdateAssociation(ctx, moved), identity.ErrConflict)
	got, err = s.GetAssociation(ctx, "prod", "a-4")
	must(t, "GetAssociation a-4", err)
	if got.ServiceAccount != "sa2" {
		t.Errorf("failed update changed the service account to %q", got.ServiceAccount)
	}

	// Once deleted, the triple is free again.
	must(t, "DeleteAssociation", s.DeleteAssociation(ctx, "prod", "a-1"))
	must(t, "CreateAssociation of freed triple", s.CreateAssociation(ctx, newAssoc("a-5", "prod", "ns", "sa")))
}

func testConcurrentCreate(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster", s.CreateCluster(ctx, newCluster("prod")))

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("a-%02d", i), "prod", "ns", "sa"))
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, identity.ErrConflict):
		default:
			t.Errorf("create %d: error = %v, want nil or ErrConflict", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent creates of one triple succeeded, want exactly 1", ok, n)
	}
	list, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations", err)
	if len(list) != 1 {
		t.Errorf("ListAssociations returned %d associations, want 1", len(list))
	}

	// Concurrent creates of distinct triples must all succeed: writers
	// queue, they do not fail with a busy error.
	for i := range n {
		wg.Go(func() {
			errs[i] = s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("b-%02d", i), "prod", "ns", fmt.Sprintf("sa-%02d", i)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent create of distinct triple %d: %v", i, err)
		}
	}
}

func testCascade(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster prod", s.CreateCluster(ctx, newCluster("prod")))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))
	for i := range 5 {
		must(t, "CreateAssociation prod", s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("p-%d", i), "prod", "ns", fmt.Sprintf("sa-%d", i))))
		must(t, "CreateAssociation dev", s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("d-%d", i), "dev", "ns", fmt.Sprintf("sa-%d", i))))
	}
	must(t, "AppendAudit", s.AppendAudit(ctx, &identity.AuditEvent{Time: base, Cluster: "prod", Outcome: identity.OutcomeIssued}))

	must(t, "DeleteCluster", s.DeleteCluster(ctx, "prod"))

	_, err := s.GetAssociation(ctx, "prod", "p-0")
	wantErr(t, "GetAssociation after cluster delete", err, identity.ErrNotFound)
	_, err = s.FindAssociation(ctx, "prod", "ns", "sa-1")
	wantErr(t, "FindAssociation after cluster delete", err, identity.ErrNotFound)
	list, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations of deleted cluster", err)
	if len(list) != 0 {
		t.Errorf("deleted cluster still lists %d associations", len(list))
	}
	list, err = s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "dev"})
	must(t, "ListAssociations dev", err)
	if len(list) != 5 {
		t.Errorf("other cluster lists %d associations, want 5", len(list))
	}

	// A cluster recreated under the same name starts empty, and the IDs of
	// the cascaded associations are free again.
	must(t, "CreateCluster prod again", s.CreateCluster(ctx, newCluster("prod")))
	list, err = s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations of recreated cluster", err)
	if len(list) != 0 {
		t.Errorf("recreated cluster lists %d associations, want 0", len(list))
	}
	must(t, "CreateAssociation with a cascaded ID", s.CreateAssociation(ctx, newAssoc("p-0", "prod", "ns", "sa-0")))

	events, err := s.ListAudit(ctx, identity.AuditFilter{Cluster: "prod"})
	must(t, "ListAudit", err)
	if len(events) != 1 {
		t.Errorf("audit of deleted cluster has %d events, want 1 (the ledger outlives the cluster)", len(events))
	}
}

func testListAssociations(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster prod", s.CreateCluster(ctx, newCluster("prod")))
	must(t, "CreateCluster dev", s.CreateCluster(ctx, newCluster("dev")))

	const n = 250
	// Five namespaces of 50 service accounts each.
	var all []*identity.Association
	for i := range n {
		all = append(all, newAssoc(fmt.Sprintf("a-%04d", i), "prod", fmt.Sprintf("ns-%d", i%5), fmt.Sprintf("sa-%d", i/5)))
	}
	// Insert in a scrambled order so the backend has to sort by ID rather
	// than return rows in insertion order.
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	for _, i := range order {
		must(t, "CreateAssociation", s.CreateAssociation(ctx, all[i]))
	}
	for i := range 7 {
		must(t, "CreateAssociation dev", s.CreateAssociation(ctx, newAssoc(fmt.Sprintf("z-%d", i), "dev", "ns-0", fmt.Sprintf("sa-%d", i))))
	}

	ids := func(list []identity.Association) []string {
		var out []string
		for _, a := range list {
			out = append(out, a.ID)
		}
		return out
	}
	wantIDs := func(keep func(*identity.Association) bool) []string {
		var out []string
		for _, a := range all {
			if keep(a) {
				out = append(out, a.ID)
			}
		}
		return out
	}
	every := func(*identity.Association) bool { return true }

	// Pages of 100: 100, 100, 50, then an empty page.
	var paged []string
	after := ""
	for page := 0; ; page++ {
		list, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod", AfterID: after, Limit: 100})
		must(t, "ListAssociations page", err)
		if want := []int{100, 100, 50, 0}[min(page, 3)]; len(list) != want {
			t.Fatalf("page %d has %d associations, want %d", page, len(list), want)
		}
		if len(list) == 0 {
			break
		}
		paged = append(paged, ids(list)...)
		after = list[len(list)-1].ID
	}
	if diff := cmp.Diff(wantIDs(every), paged); diff != "" {
		t.Errorf("paged IDs (-want +got):\n%s", diff)
	}

	got, err := s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "prod"})
	must(t, "ListAssociations without limit", err)
	if diff := cmp.Diff(wantIDs(every), ids(got)); diff != "" {
		t.Errorf("ListAssociations without limit (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(all[17], &got[17], opts); diff != "" {
		t.Errorf("listed association (-want +got):\n%s", diff)
	}

	tests := []struct {
		name string
		f    identity.AssociationFilter
		keep func(*identity.Association) bool
	}{
		{"namespace", identity.AssociationFilter{Namespace: "ns-1"},
			func(a *identity.Association) bool { return a.Namespace == "ns-1" }},
		{"service account", identity.AssociationFilter{ServiceAccount: "sa-4"},
			func(a *identity.Association) bool { return a.ServiceAccount == "sa-4" }},
		{"both", identity.AssociationFilter{Namespace: "ns-2", ServiceAccount: "sa-5"},
			func(a *identity.Association) bool { return a.Namespace == "ns-2" && a.ServiceAccount == "sa-5" }},
		{"namespace after id", identity.AssociationFilter{Namespace: "ns-0", AfterID: "a-0100"},
			func(a *identity.Association) bool { return a.Namespace == "ns-0" && a.ID > "a-0100" }},
		{"namespace limit", identity.AssociationFilter{Namespace: "ns-0", Limit: 5},
			func(a *identity.Association) bool { return a.Namespace == "ns-0" && a.ID <= "a-0020" }},
		{"after existing id", identity.AssociationFilter{AfterID: "a-0247"},
			func(a *identity.Association) bool { return a.ID > "a-0247" }},
		{"after missing id", identity.AssociationFilter{AfterID: "a-0100x"},
			func(a *identity.Association) bool { return a.ID > "a-0100x" }},
		{"after the end", identity.AssociationFilter{AfterID: "a-9999"},
			func(a *identity.Association) bool { return false }},
		{"no match", identity.AssociationFilter{Namespace: "nope"},
			func(a *identity.Association) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			f.Cluster = "prod"
			got, err := s.ListAssociations(ctx, f)
			must(t, "ListAssociations", err)
			if diff := cmp.Diff(wantIDs(tt.keep), ids(got)); diff != "" {
				t.Errorf("ListAssociations(%+v) (-want +got):\n%s", f, diff)
			}
		})
	}

	got, err = s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "dev"})
	must(t, "ListAssociations dev", err)
	if len(got) != 7 {
		t.Errorf("ListAssociations dev returned %d, want 7", len(got))
	}
	got, err = s.ListAssociations(ctx, identity.AssociationFilter{Cluster: "nope"})
	must(t, "ListAssociations of unknown cluster", err)
	if len(got) != 0 {
		t.Errorf("ListAssociations of unknown cluster returned %d, want 0", len(got))
	}
}

func testTags(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	must(t, "CreateCluster", s.CreateCluster(ctx, newCluster("prod")))
	tests := []struct {
		name string
		tags map[string]string
	}{
		{"nil", nil},
		{"empty", map[string]string{}},
		{"one", map[string]string{"team": "payments"}},
		{"many", map[string]string{
			"a": "1", "b": "", "aws:cloudformation:stack-name": "x",
			"quotes\"and\\slashes": "line\nbreak", "ünïcødé": "値", "": "empty key",
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAssoc(fmt.Sprintf("a-%d", i), "prod", "ns", tt.name)
			a.Tags = tt.tags
			must(t, "CreateAssociation", s.CreateAssociation(ctx, a))
			got, err := s.GetAssociation(ctx, "prod", a.ID)
			must(t, "GetAssociation", err)
			if diff := cmp.Diff(tt.tags, got.Tags, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}

			// Update to other tags and back to none.
			a.Tags = map[string]string{"updated": tt.name}
			must(t, "UpdateAssociation", s.UpdateAssociation(ctx, a))
			got, err = s.FindAssociation(ctx, "prod", "ns", tt.name)
			must(t, "FindAssociation", err)
			if diff := cmp.Diff(a.Tags, got.Tags); diff != "" {
				t.Errorf("updated tags (-want +got):\n%s", diff)
			}
			a.Tags = nil
			must(t, "UpdateAssociation to no tags", s.UpdateAssociation(ctx, a))
			got, err = s.GetAssociation(ctx, "prod", a.ID)
			must(t, "GetAssociation", err)
			if len(got.Tags) != 0 {
				t.Errorf("tags after clearing = %v, want none", got.Tags)
			}
		})
	}
}

func testTimes(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	times := []time.Time{
		base,
		base.UTC(),
		time.Date(1999, 12, 31, 23, 59, 59, 999_000_000, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 1_000_000, time.FixedZone("PST", -8*3600)),
		time.Date(2100, 6, 1, 0, 0, 0, 0, time.UTC),
	}
	for i, ts := range times {
		c := newCluster(fmt.Sprintf("c%d", i))
		c.CreatedAt, c.ModifiedAt = ts, ts.Add(1500*time.Millisecond)
		must(t, "CreateCluster", s.CreateCluster(ctx, c))
		gotC, err := s.GetCluster(ctx, c.Name)
		must(t, "GetCluster", err)
		if diff := cmp.Diff(c, gotC, opts); diff != "" {
			t.Errorf("cluster times (-want +got):\n%s", diff)
		}
		mustUTC(t, "cluster", gotC.CreatedAt, gotC.ModifiedAt)

		a := newAssoc(fmt.Sprintf("a-%d", i), c.Name, "ns", "sa")
		a.CreatedAt, a.ModifiedAt = ts, ts.Add(time.Millisecond)
		must(t, "CreateAssociation", s.CreateAssociation(ctx, a))
		gotA, err := s.GetAssociation(ctx, c.Name, a.ID)
		must(t, "GetAssociation", err)
		if diff := cmp.Diff(a, gotA, opts); diff != "" {
			t.Errorf("association times (-want +got):\n%s", diff)
		}
		mustUTC(t, "association", gotA.CreatedAt, gotA.ModifiedAt)
		if !gotA.ModifiedAt.After(gotA.CreatedAt) {
			t.Errorf("a millisecond apart: ModifiedAt %v is not after CreatedAt %v", gotA.ModifiedAt, gotA.CreatedAt)
		}

		e := &identity.AuditEvent{Time: ts, Cluster: c.Name, Outcome: identity.OutcomeIssued}
		must(t, "AppendAudit", s.AppendAudit(ctx, e))
		events, err := s.ListAudit(ctx, identity.AuditFilter{Cluster: c.Name})
		must(t, "ListAudit", err)
		if len(events) != 1 {
			t.Fatalf("ListAudit returned %d events, want 1", len(events))
		}
		if diff := cmp.Diff(ts, events[0].Time, timeOpt); diff != "" {
			t.Errorf("audit time (-want +got):\n%s", diff)
		}
		mustUTC(t, "audit", events[0].Time)
	}
}

func testAudit(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()

	events, err := s.ListAudit(ctx, identity.AuditFilter{})
	must(t, "ListAudit of empty ledger", err)
	if len(events) != 0 {
		t.Errorf("empty ledger lists %d events", len(events))
	}

	const n = 30
	var all []identity.AuditEvent // in append order
	var lastID int64
	for i := range n {
		e := identity.AuditEvent{
			Time:           base.Add(time.Duration(i) * time.Second),
			Cluster:        []string{"prod", "dev"}[i%2],
			Namespace:      "ns",
			ServiceAccount: fmt.Sprintf("sa-%d", i),
			PodName:        fmt.Sprintf("pod-%d", i),
			PodUID:         fmt.Sprintf("uid-%d", i),
			NodeName:       "node-1",
			AssociationID:  fmt.Sprintf("a-%d", i),
			RoleARN:        "arn:aws:iam::111122223333:role/r",
			Outcome:        identity.OutcomeIssued,
			STSRequestID:   fmt.Sprintf("req-%d", i),
		}
		if i%5 == 4 {
			e.Outcome = identity.OutcomeDenied
			e.ErrorType = "AccessDeniedException"
			e.Message = "no association"
			e.STSRequestID = ""
		}
		must(t, "AppendAudit", s.AppendAudit(ctx, &e))
		if e.ID <= lastID {
			t.Fatalf("AppendAudit set ID %d after %d; IDs must increase", e.ID, lastID)
		}
		lastID = e.ID
		all = append(all, e)
	}

	newestFirst := func(keep func(identity.AuditEvent) bool) []identity.AuditEvent {
		var out []identity.AuditEvent
		for _, e := range slices.Backward(all) {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	every := func(identity.AuditEvent) bool { return true }

	got, err := s.ListAudit(ctx, identity.AuditFilter{})
	must(t, "ListAudit", err)
	if diff := cmp.Diff(newestFirst(every), got, opts); diff != "" {
		t.Errorf("ListAudit (-want +got):\n%s", diff)
	}

	page := func(f identity.AuditFilter) []identity.AuditEvent {
		t.Helper()
		var out []identity.AuditEvent
		for i := 0; ; i++ {
			if i > n {
				t.Fatalf("paging %+v does not end", f)
			}
			list, err := s.ListAudit(ctx, f)
			must(t, "ListAudit page", err)
			if len(list) > f.Limit {
				t.Fatalf("page of %d events exceeds limit %d", len(list), f.Limit)
			}
			if len(list) == 0 {
				return out
			}
			out = append(out, list...)
			f.BeforeID = list[len(list)-1].ID
		}
	}
	if diff := cmp.Diff(newestFirst(every), page(identity.AuditFilter{Limit: 7}), opts); diff != "" {
		t.Errorf("paged ListAudit (-want +got):\n%s", diff)
	}
	dev := func(e identity.AuditEvent) bool { return e.Cluster == "dev" }
	if diff := cmp.Diff(newestFirst(dev), page(identity.AuditFilter{Cluster: "dev", Limit: 4}), opts); diff != "" {
		t.Errorf("paged ListAudit of dev (-want +got):\n%s", diff)
	}

	mid := all[n/2].ID
	got, err = s.ListAudit(ctx, identity.AuditFilter{Cluster: "prod", BeforeID: mid})
	must(t, "ListAudit before", err)
	want := newestFirst(func(e identity.AuditEvent) bool { return e.Cluster == "prod" && e.ID < mid })
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("ListAudit of prod before %d (-want +got):\n%s", mid, diff)
	}

	got, err = s.ListAudit(ctx, identity.AuditFilter{Cluster: "nope"})
	must(t, "ListAudit of unknown cluster", err)
	if len(got) != 0 {
		t.Errorf("ListAudit of unknown cluster returned %d events", len(got))
	}
}

func testReopen(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	c := newCluster("prod")
	c.Keys = identity.KeySource{Kind: identity.KeysKubernetes, URL: "https://10.0.0.1:6443", BearerToken: "tok"}
	must(t, "CreateCluster", s.CreateCluster(ctx, c))
	a := newAssoc("a-1", "prod", "ns", "sa")
	a.Tags = map[string]string{"k": "v"}
	a.ClientRequestToken = "tok-1"
	must(t, "CreateAssociation", s.CreateAssociation(ctx, a))
	e := &identity.AuditEvent{Time: base, Cluster: "prod", Outcome: identity.OutcomeIssued, Message: "first"}
	must(t, "AppendAudit", s.AppendAudit(ctx, e))
	must(t, "Close", s.Close())

	s = h.open()
	gotC, err := s.GetCluster(ctx, "prod")
	must(t, "GetCluster after reopen", err)
	if diff := cmp.Diff(c, gotC, opts); diff != "" {
		t.Errorf("cluster after reopen (-want +got):\n%s", diff)
	}
	gotA, err := s.FindAssociation(ctx, "prod", "ns", "sa")
	must(t, "FindAssociation after reopen", err)
	if diff := cmp.Diff(a, gotA, opts); diff != "" {
		t.Errorf("association after reopen (-want +got):\n%s", diff)
	}
	if _, err := s.FindAssociationByRequestToken(ctx, "prod", "tok-1"); err != nil {
		t.Errorf("FindAssociationByRequestToken after reopen: %v", err)
	}

	e2 := &identity.AuditEvent{Time: base.Add(time.Second), Cluster: "prod", Outcome: identity.OutcomeDenied, Message: "second"}
	must(t, "AppendAudit after reopen", s.AppendAudit(ctx, e2))
	if e2.ID <= e.ID {
		t.Errorf("audit ID after reopen %d is not after %d", e2.ID, e.ID)
	}
	events, err := s.ListAudit(ctx, identity.AuditFilter{})
	must(t, "ListAudit after reopen", err)
	if diff := cmp.Diff([]identity.AuditEvent{*e2, *e}, events, opts); diff != "" {
		t.Errorf("audit after reopen (-want +got):\n%s", diff)
	}

	// The new Store is fully usable for writes too.
	must(t, "DeleteCluster after reopen", s.DeleteCluster(ctx, "prod"))
	must(t, "Close again", s.Close())
	s = h.open()
	if _, err := s.GetCluster(ctx, "prod"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("GetCluster after delete and reopen: error = %v, want ErrNotFound", err)
	}
}
