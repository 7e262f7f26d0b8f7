package ha_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/store/postgres/pgtest"
)

const (
	writeCluster = "durable"
	// totalWrites are sent by writers goroutines; the server is killed once
	// killAfter of them were acknowledged.
	totalWrites = 1000
	writers     = 50
	killAfter   = 300
)

// write i is the association of service account sa-<i> in namespace
// ns-<i mod 20> with role app-<i>: every field says which write it came
// from, so a row mixing two writes shows up.
func writeNamespace(i int) string { return fmt.Sprintf("ns-%02d", i%20) }
func writeSA(i int) string        { return fmt.Sprintf("sa-%04d", i) }
func writeRole(i int) string      { return fmt.Sprintf("arn:aws:iam::111122223333:role/app-%04d", i) }

// TestKillDuringWrites: podid server is killed with SIGKILL while 50
// clients create 1000 associations through the AWS SDK; after a restart on
// the same store, every create that got a 200 is there, whole, and every
// row there is whole and one of the writes sent.
func TestKillDuringWrites(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testKillDuringWrites(t, "sqlite://"+filepath.Join(t.TempDir(), "podid.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		testKillDuringWrites(t, pgtest.Fresh(t))
	})
}

func testKillDuringWrites(t *testing.T, store string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := writeKeys(t, writeCluster)
	env := baseEnv(t)
	srv := startServer(t, "server", store, k, env)
	issuer, err := k8stest.NewIssuer("https://durable.podid.test", "RS256")
	if err != nil {
		t.Fatal(err)
	}
	registerCluster(t, ctx, srv.url, k, api.Cluster{Name: writeCluster, Issuer: issuer.URL, Keys: api.KeySource{Kind: "jwks", JWKS: issuer.JWKS()}})

	var (
		mu      sync.Mutex
		acked   = map[int]types.PodIdentityAssociation{}
		early   []string // errors before the kill: the server failed on its own
		nAcked  atomic.Int64
		killing atomic.Bool
		killNow = make(chan struct{})
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	client := eksClient(srv.url, k.adminCreds())
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= totalWrites {
					return
				}
				wctx, wcancel := context.WithTimeout(ctx, time.Minute)
				out, err := client.CreatePodIdentityAssociation(wctx, &eks.CreatePodIdentityAssociationInput{
					ClusterName: aws.String(writeCluster), Namespace: aws.String(writeNamespace(i)),
					ServiceAccount: aws.String(writeSA(i)), RoleArn: aws.String(writeRole(i)),
				})
				wcancel()
				if err != nil {
					if !killing.Load() {
						mu.Lock()
						early = append(early, fmt.Sprintf("write %d: %v", i, err))
						mu.Unlock()
					}
					continue
				}
				if out.Association == nil || aws.ToString(out.Association.AssociationId) == "" {
					mu.Lock()
					early = append(early, fmt.Sprintf("write %d: 200 without an association id", i))
					mu.Unlock()
					continue
				}
				mu.Lock()
				acked[i] = *out.Association
				mu.Unlock()
				if nAcked.Add(1) == killAfter {
					close(killNow)
				}
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-killNow:
		killing.Store(true)
		srv.kill9(t)
	case <-allDone:
		t.Fatalf("only %d of %d writes acknowledged and the server was never killed; errors: %s",
			nAcked.Load(), totalWrites, strings.Join(first(early, 5), "; "))
	}
	<-allDone
	if len(early) > 0 {
		t.Errorf("%d writes failed before the kill, e.g. %s", len(early), strings.Join(first(early, 5), "; "))
	}
	t.Logf("%d of %d writes acknowledged when the server was killed", len(acked), totalWrites)
	if len(acked) >= totalWrites {
		t.Fatalf("all writes acknowledged: the kill came too late to test anything")
	}

	srv2 := startServer(t, "restarted server", store, k, env)
	client = eksClient(srv2.url, k.adminCreds())

	// Every acknowledged write is there, as acknowledged.
	for i, want := range acked {
		out, err := client.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{
			ClusterName: aws.String(writeCluster), AssociationId: want.AssociationId,
		})
		if err != nil {
			t.Errorf("acknowledged write %d (%s) after restart: %v", i, aws.ToString(want.AssociationId), err)
			continue
		}
		checkAssociation(t, i, out.Association)
		if got := aws.ToString(out.Association.AssociationArn); got != aws.ToString(want.AssociationArn) {
			t.Errorf("write %d: association ARN %q after restart, acknowledged %q", i, got, aws.ToString(want.AssociationArn))
		}
	}

	// Every row is whole and one of the writes; none is there twice.
	seen := map[int]bool{}
	pages := eks.NewListPodIdentityAssociationsPaginator(client, &eks.ListPodIdentityAssociationsInput{
		ClusterName: aws.String(writeCluster), MaxResults: aws.Int32(100),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatalf("listing associations after restart: %v", err)
		}
		for _, s := range page.Associations {
			i, ok := writeIndex(aws.ToString(s.ServiceAccount))
			if !ok {
				t.Errorf("row %s has service account %q, which no write sent", aws.ToString(s.AssociationId), aws.ToString(s.ServiceAccount))
				continue
			}
			if seen[i] {
				t.Errorf("write %d is there twice", i)
			}
			seen[i] = true
			out, err := client.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{
				ClusterName: aws.String(writeCluster), AssociationId: s.AssociationId,
			})
			if err != nil {
				t.Errorf("listed row of write %d: %v", i, err)
				continue
			}
			checkAssociation(t, i, out.Association)
		}
	}
	for i := range acked {
		if !seen[i] {
			t.Errorf("acknowledged write %d is not listed after restart", i)
		}
	}
	t.Logf("%d rows after restart: %d acknowledged, %d committed without an answer", len(seen), len(acked), len(seen)-len(acked))

	// The store takes writes again.
	if _, err := client.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(writeCluster), Namespace: aws.String("after"), ServiceAccount: aws.String("restart"), RoleArn: aws.String(writeRole(0)),
	}); err != nil {
		t.Errorf("write after restart: %v", err)
	}
}

// checkAssociation fails the test unless a is exactly what write i sent.
func checkAssociation(t *testing.T, i int, a *types.PodIdentityAssociation) {
	t.Helper()
	if a == nil {
		t.Errorf("write %d: no association in the answer", i)
		return
	}
	got := [4]string{aws.ToString(a.ClusterName), aws.ToString(a.Namespace), aws.ToString(a.ServiceAccount), aws.ToString(a.RoleArn)}
	want := [4]string{writeCluster, writeNamespace(i), writeSA(i), writeRole(i)}
	if got != want {
		t.Errorf("write %d: stored (cluster, namespace, service account, role) = %q, want %q", i, got, want)
	}
	if aws.ToString(a.AssociationId) == "" || aws.ToString(a.AssociationArn) == "" || a.CreatedAt == nil {
		t.Errorf("write %d: incomplete row: id %q, ARN %q, createdAt %v", i, aws.ToString(a.AssociationId), aws.ToString(a.AssociationArn), a.CreatedAt)
	}
}

func writeIndex(sa string) (int, bool) {
	n, ok := strings.CutPrefix(sa, "sa-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil && i >= 0 && i < totalWrites && writeSA(i) == sa
}

func first(s []string, n int) []string { return s[:min(len(s), n)] }
