//go:build linux

// Package e2e runs podid's real binaries against real kube-apiservers and
// etcd: cluster registration through the API server, the webhook as the API
// server calls it, and credentials for a token the API server minted, passed
// through podid agent and podid server to a fake STS. See docs/testing.md.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"golang.org/x/sync/errgroup"

	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/test/e2e/harness"
)

// The two clusters. Tokens of B must never be accepted for A.
const (
	clusterA = "e2e-a"
	clusterB = "e2e-b"
	region   = "us-east-1"
	account  = "123456789012"
)

// environment is shared by every test of the package: starting two API
// servers costs tens of seconds on two cores, so they start once, on first
// use, and each test works in namespaces of its own.
type environment struct {
	podid   string
	etcd    *harness.Etcd
	a, b    *harness.Cluster
	sts     *ststest.Server
	server  *harness.Server
	agent   *harness.Agent   // for cluster A
	webhook *harness.Webhook // for cluster A
	eks     *eks.Client
	startup time.Duration
}

var (
	envOnce  sync.Once
	envValue *environment
	envErr   error
	// stack holds the environment's cleanups; TestMain runs them.
	stack = &harness.Stack{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	stack.Close()
	harness.RemovePodidBuild()
	os.Exit(code)
}

// setup returns the shared environment, starting it on first use. A
// missing etcd or kube-apiserver fails the test with the reason: the suite
// never skips because its dependencies are absent.
func setup(t *testing.T) *environment {
	t.Helper()
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		start := time.Now()
		envValue, envErr = startEnvironment(ctx)
		if envValue != nil {
			envValue.startup = time.Since(start)
		}
	})
	if envErr != nil {
		t.Fatalf("starting the e2e environment: %v", envErr)
	}
	return envValue
}

func startEnvironment(ctx context.Context) (*environment, error) {
	e := &environment{}

	// The podid build and the (possibly very long) kube-apiserver build are
	// independent of etcd, so they run side by side.
	var g errgroup.Group
	g.Go(func() (err error) { e.podid, err = harness.PodidBinary(stack); return err })
	g.Go(func() error { _, err := harness.KubeAPIServerBinary(stack); return err })
	g.Go(func() (err error) { e.etcd, err = harness.StartEtcd(ctx, stack); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var clusters errgroup.Group
	clusters.Go(func() (err error) {
		e.a, err = harness.StartCluster(ctx, stack, harness.ClusterOptions{Name: clusterA, Etcd: e.etcd})
		return err
	})
	clusters.Go(func() (err error) {
		e.b, err = harness.StartCluster(ctx, stack, harness.ClusterOptions{Name: clusterB, Etcd: e.etcd})
		return err
	})
	if err := clusters.Wait(); err != nil {
		return nil, err
	}

	var err error
	e.sts = ststest.Start(ststest.WithAccount(account))
	stack.Cleanup(e.sts.Close)
	stsCreds, err := e.sts.Credentials().Retrieve(ctx)
	if err != nil {
		return nil, err
	}
	e.server, err = harness.StartServer(ctx, stack, harness.ServerOptions{
		Podid: e.podid, STSEndpoint: e.sts.URL, STSCredentials: stsCreds, Region: region, Account: account,
	})
	if err != nil {
		return nil, err
	}
	e.eks = eks.New(eks.Options{BaseEndpoint: aws.String(e.server.URL), Region: region, Credentials: e.server.Admin.Provider()})

	for _, c := range []*harness.Cluster{e.a, e.b} {
		if err := registerCluster(ctx, e.podid, e.server, c); err != nil {
			return nil, err
		}
	}
	if e.agent, err = harness.StartAgent(ctx, stack, e.podid, e.server, clusterA); err != nil {
		return nil, err
	}
	if err := e.startWebhook(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// startWebhook runs `podid webhook` for cluster A and registers it by URL
// in a MutatingWebhookConfiguration pointing outside the cluster, with no
// caBundle: the webhook's managed CA fills it in, as in a real install.
func (e *environment) startWebhook(ctx context.Context) (err error) {
	const ns, config = "podid-system", "podid-e2e"
	if err := createNamespace(ctx, e.a, ns); err != nil {
		return err
	}
	port := harness.FreePort()
	if err := registerWebhook(ctx, e.a, config, fmt.Sprintf("https://127.0.0.1:%d/mutate", port)); err != nil {
		return err
	}
	e.webhook, err = harness.StartWebhook(ctx, stack, harness.WebhookOptions{
		Podid: e.podid, Server: e.server, Cluster: e.a, Port: port, Namespace: ns, ConfigName: config,
	})
	if err != nil {
		return err
	}
	// Wait until the API server calls the webhook and it injects.
	const probeNS, probeSA = "e2e-webhook-probe", "probe"
	if err := createNamespace(ctx, e.a, probeNS); err != nil {
		return err
	}
	if err := createServiceAccount(ctx, e.a, probeNS, probeSA); err != nil {
		return err
	}
	if _, err := e.createAssociation(ctx, clusterA, probeNS, probeSA, roleARN("probe")); err != nil {
		return err
	}
	return e.waitInjected(ctx, probeNS, probeSA)
}

// waitInjected creates dry-run pods for the service account until one
// comes back mutated. The API server loads webhook configurations (and the
// patched caBundle) asynchronously, and the webhook's index learns new
// associations on its next poll: a pod created before both would rightly
// be admitted unmutated.
func (e *environment) waitInjected(ctx context.Context, ns, sa string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		pod, err := createPod(ctx, e.a, ns, podSpec("probe", sa), true)
		if err == nil && hasVolume(pod, webhook.VolumeName) {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("pods are admitted unmutated")
			}
			return fmt.Errorf("the webhook did not inject into pods of %s/%s within a minute: %v\nwebhook log:\n%s",
				ns, sa, err, e.webhook.Process.Tail(20))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
