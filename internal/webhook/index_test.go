package webhook_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/internal/server"
	"github.com/podid/podid/internal/store/sqlite"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/webhook"
)

const (
	testRegion = "us-east-1"
	testRole   = "arn:aws:iam::111122223333:role/checkout"
)

// podidServer is a podid server wired from its real parts, with an admin
// and a read-only key.
type podidServer struct {
	http     *httptest.Server
	admin    *eks.Client
	readOnly auth.Key
}

func newPodidServer(t testing.TB) *podidServer {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "podid.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	stsSrv := ststest.New(t)
	issuer, err := sts.New(ctx, sts.Config{Endpoint: stsSrv.URL, Region: testRegion, Credentials: stsSrv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := identity.New(identity.Config{
		Store:    st,
		Verifier: k8s.NewVerifier(k8s.VerifierConfig{}),
		Issuer:   issuer,
		Region:   testRegion,
		Account:  "111122223333",
	})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := auth.GenerateKey("webhook", auth.ScopeReadOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := auth.NewKeyring([]auth.Key{admin, ro})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Service: svc, Auth: &auth.Verifier{Keys: kr}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	jwks, err := os.ReadFile("../../testdata/kubernetes-1.37/cluster-a/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	adminCreds := credentials.NewStaticCredentialsProvider(admin.AccessKeyID, admin.SecretAccessKey, "")
	apiClient := &api.Client{Endpoint: hs.URL, Credentials: adminCreds, Region: testRegion}
	if _, err := apiClient.RegisterCluster(ctx, api.Cluster{
		Name: "cluster-a", Issuer: "https://cluster-a.podid.test",
		Keys: api.KeySource{Kind: identity.KeysJWKS, JWKS: strings.TrimSpace(string(jwks))},
	}); err != nil {
		t.Fatal(err)
	}
	adminEKS := eks.New(eks.Options{BaseEndpoint: aws.String(hs.URL), Region: testRegion, Credentials: adminCreds, RetryMaxAttempts: 1})
	return &podidServer{http: hs, admin: adminEKS, readOnly: ro}
}

func (s *podidServer) associate(t testing.TB, namespace, serviceAccount string) string {
	t.Helper()
	out, err := s.admin.CreatePodIdentityAssociation(context.Background(), &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), Namespace: aws.String(namespace),
		ServiceAccount: aws.String(serviceAccount), RoleArn: aws.String(testRole),
	})
	if err != nil {
		t.Fatalf("creating association %s/%s: %v", namespace, serviceAccount, err)
	}
	return aws.ToString(out.Association.AssociationId)
}

func (s *podidServer) disassociate(t testing.TB, id string) {
	t.Helper()
	if _, err := s.admin.DeletePodIdentityAssociation(context.Background(), &eks.DeletePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id),
	}); err != nil {
		t.Fatal(err)
	}
}

// index is an AssociationIndex on the real EKS SDK client with the
// read-only key.
func (s *podidServer) index(t testing.TB, cluster string, reg prometheus.Registerer) *webhook.AssociationIndex {
	t.Helper()
	client := webhook.NewEKSClient(s.http.URL, testRegion,
		credentials.NewStaticCredentialsProvider(s.readOnly.AccessKeyID, s.readOnly.SecretAccessKey, ""), nil)
	idx, err := webhook.NewAssociationIndex(webhook.IndexConfig{
		Client:   client,
		Cluster:  cluster,
		PageSize: 2, // three associations take two pages
		Timeout:  5 * time.Second,
		Metrics:  webhook.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

type lookup struct {
	ns, sa     string
	known, has bool
}

func checkIndex(t *testing.T, idx webhook.Index, want []lookup) {
	t.Helper()
	for _, w := range want {
		known, has := idx.HasAssociation(w.ns, w.sa)
		if known != w.known || has != w.has {
			t.Errorf("HasAssociation(%q, %q) = %v, %v; want %v, %v", w.ns, w.sa, known, has, w.known, w.has)
		}
	}
}

func TestAssociationIndexAgainstServer(t *testing.T) {
	ctx := context.Background()
	s := newPodidServer(t)
	s.associate(t, "shop", "checkout")
	cartID := s.associate(t, "shop", "cart")
	s.associate(t, "billing", "invoicer")
	reg := prometheus.NewRegistry()
	idx := s.index(t, "cluster-a", reg)

	if idx.Ready() {
		t.Fatal("Ready before the first load")
	}
	checkIndex(t, idx, []lookup{{"shop", "checkout", false, false}})

	// Initial load, across two pages.
	if err := idx.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !idx.Ready() {
		t.Fatal("not Ready after a load")
	}
	checkIndex(t, idx, []lookup{
		{"shop", "checkout", true, true},
		{"shop", "cart", true, true},
		{"billing", "invoicer", true, true},
		{"shop", "invoicer", true, false},
		{"billing", "checkout", true, false},
		{"shop", "default", true, false},
	})

	// Created later: shows up after a refresh, not before.
	s.associate(t, "shop", "default")
	checkIndex(t, idx, []lookup{{"shop", "default", true, false}})
	if err := idx.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, idx, []lookup{{"shop", "default", true, true}})

	// Deleted: disappears after a refresh.
	s.disassociate(t, cartID)
	if err := idx.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, idx, []lookup{{"shop", "cart", true, false}, {"shop", "checkout", true, true}})

	// Server down: the refresh fails, the last known set stays.
	s.http.Close()
	if err := idx.Refresh(ctx); err == nil {
		t.Fatal("Refresh against a closed server succeeded")
	}
	if !idx.Ready() {
		t.Error("a failed refresh made the index cold")
	}
	checkIndex(t, idx, []lookup{
		{"shop", "checkout", true, true},
		{"shop", "default", true, true},
		{"billing", "invoicer", true, true},
		{"shop", "cart", true, false},
	})

	got := gatherValues(t, reg)
	want := map[string]float64{
		`podid_webhook_index_refreshes_total{result="ok"}`:    3,
		`podid_webhook_index_refreshes_total{result="error"}`: 1,
		`podid_webhook_index_service_accounts`:                3,
		`podid_webhook_index_ready`:                           1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if got["podid_webhook_index_last_success_timestamp_seconds"] == 0 {
		t.Error("last success timestamp not set")
	}
}

func TestAssociationIndexUnknownCluster(t *testing.T) {
	s := newPodidServer(t)
	idx := s.index(t, "no-such-cluster", nil)
	err := idx.Refresh(context.Background())
	var nf *ekstypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("Refresh = %v, want ResourceNotFoundException", err)
	}
	if idx.Ready() {
		t.Error("Ready after a failed first load")
	}
}

// gatherValues flattens a registry into "name{label=value}" → value.
func gatherValues(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if ls := m.GetLabel(); len(ls) > 0 {
				var parts []string
				for _, l := range ls {
					parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// fakeLister serves pages from a list it can change, failing on demand.
type fakeLister struct {
	mu    sync.Mutex
	items [][2]string
	fail  int // fail the next n calls
	calls int
}

func (f *fakeLister) set(fail int, items ...[2]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.items = fail, items
}

func (f *fakeLister) ListPodIdentityAssociations(ctx context.Context, in *eks.ListPodIdentityAssociationsInput, _ ...func(*eks.Options)) (*eks.ListPodIdentityAssociationsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("connection refused")
	}
	start := 0
	if in.NextToken != nil {
		for start < len(f.items) && f.items[start][0]+"/"+f.items[start][1] != *in.NextToken {
			start++
		}
	}
	end := min(start+int(aws.ToInt32(in.MaxResults)), len(f.items))
	out := &eks.ListPodIdentityAssociationsOutput{}
	for _, it := range f.items[start:end] {
		out.Associations = append(out.Associations, ekstypes.PodIdentityAssociationSummary{Namespace: aws.String(it[0]), ServiceAccount: aws.String(it[1])})
	}
	if end < len(f.items) {
		out.NextToken = aws.String(f.items[end][0] + "/" + f.items[end][1])
	}
	return out, nil
}

// TestAssociationIndexPartialPage: a failure on the second page must not
// replace the set with the first page alone, nor make a cold index ready.
func TestAssociationIndexPartialPage(t *testing.T) {
	ctx := context.Background()
	lister := &fakeLister{}
	lister.set(0, [2]string{"a", "1"}, [2]string{"b", "2"}, [2]string{"c", "3"})
	failing := &pageFailer{fakeLister: lister, failOn: 2}

	cold, err := webhook.NewAssociationIndex(webhook.IndexConfig{Client: failing, Cluster: "c", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := cold.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing second page succeeded")
	}
	if cold.Ready() {
		t.Error("a partial first load made the index ready")
	}

	failing.calls, failing.failOn = 0, 0
	idx, err := webhook.NewAssociationIndex(webhook.IndexConfig{Client: failing, Cluster: "c", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	lister.set(0, [2]string{"a", "1"}, [2]string{"x", "1"}, [2]string{"y", "2"})
	failing.calls, failing.failOn = 0, 2
	if err := idx.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing second page succeeded")
	}
	checkIndex(t, idx, []lookup{{"a", "1", true, true}, {"b", "2", true, true}, {"c", "3", true, true}, {"x", "1", true, false}})
}

// pageFailer fails the failOn-th call (1-based) it sees.
type pageFailer struct {
	*fakeLister
	failOn int
	calls  int
}

func (p *pageFailer) ListPodIdentityAssociations(ctx context.Context, in *eks.ListPodIdentityAssociationsInput, opts ...func(*eks.Options)) (*eks.ListPodIdentityAssociationsOutput, error) {
	p.calls++
	if p.calls == p.failOn {
		return nil, errors.New("connection reset")
	}
	return p.fakeLister.ListPodIdentityAssociations(ctx, in, opts...)
}

// stepper replaces Sleep: each wait is reported on waits and returns when
// the test sends on proceed.
type stepper struct {
	waits   chan time.Duration
	proceed chan struct{}
}

func newStepper() *stepper {
	return &stepper{waits: make(chan time.Duration), proceed: make(chan struct{})}
}

func (s *stepper) sleep(ctx context.Context, d time.Duration) error {
	select {
	case s.waits <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-s.proceed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stepper) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-s.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not wait again")
		return 0
	}
}

func within(d, want time.Duration, jitter float64) bool {
	span := time.Duration(float64(want) * jitter)
	return d >= want-span && d <= want+span
}

// TestAssociationIndexRun drives Run's loop step by step: quick retries
// while cold, the refresh interval once loaded, the set kept across
// failures, and a clean return when the context ends.
func TestAssociationIndexRun(t *testing.T) {
	lister := &fakeLister{}
	lister.set(3, [2]string{"shop", "checkout"})
	st := newStepper()
	idx, err := webhook.NewAssociationIndex(webhook.IndexConfig{
		Client: lister, Cluster: "c", RefreshInterval: 30 * time.Second, Jitter: 0.1, Sleep: st.sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- idx.Run(ctx) }()

	// Cold: 1s, 2s, 4s between attempts.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		d := st.next(t)
		if !within(d, want, 0.1) {
			t.Errorf("cold retry wait = %s, want %s ±10%%", d, want)
		}
		if idx.Ready() {
			t.Fatal("ready while every load failed")
		}
		st.proceed <- struct{}{}
	}
	// Fourth attempt succeeds: the regular interval follows.
	if d := st.next(t); !within(d, 30*time.Second, 0.1) {
		t.Errorf("wait after success = %s, want 30s ±10%%", d)
	}
	checkIndex(t, idx, []lookup{{"shop", "checkout", true, true}, {"shop", "cart", true, false}})

	// A failure once loaded keeps the set and waits the regular interval.
	lister.set(1, [2]string{"shop", "cart"})
	st.proceed <- struct{}{}
	if d := st.next(t); !within(d, 30*time.Second, 0.1) {
		t.Errorf("wait after a failure when loaded = %s, want 30s ±10%%", d)
	}
	checkIndex(t, idx, []lookup{{"shop", "checkout", true, true}, {"shop", "cart", true, false}})

	// Recovery picks up the new list.
	st.proceed <- struct{}{}
	st.next(t)
	checkIndex(t, idx, []lookup{{"shop", "checkout", true, false}, {"shop", "cart", true, true}})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil on cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewAssociationIndexConfig(t *testing.T) {
	lister := &fakeLister{}
	for name, cfg := range map[string]webhook.IndexConfig{
		"no client":  {Cluster: "c"},
		"no cluster": {Client: lister},
		"jitter 1":   {Client: lister, Cluster: "c", Jitter: 1},
	} {
		if _, err := webhook.NewAssociationIndex(cfg); err == nil {
			t.Errorf("%s: NewAssociationIndex succeeded", name)
		}
	}
}
