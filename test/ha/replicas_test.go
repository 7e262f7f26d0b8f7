package ha_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/store/postgres/pgtest"
	"github.com/podid/podid/internal/sts/ststest"
)

const (
	haCluster = "ha"
	haRole    = "arn:aws:iam::111122223333:role/web"
	pods      = 20
	// rotateEvery: a pod mints a new token (a cache miss, so a server call)
	// every rotateEvery requests; the others are cache hits. With podPause
	// this keeps the misses near the agent's default limit of 20 server
	// calls a second.
	rotateEvery = 50
	podPause    = 20 * time.Millisecond
	// callsBeforeKill per replica, and callsAfterKill on the survivor, are
	// the server calls (cache misses) the agent must have made before and
	// after the kill: they make sure the load really spanned both replicas
	// and the failure.
	callsBeforeKill = 25
	callsAfterKill  = 40
)

// TestReplicaKillUnderAgentLoad: two podid server replicas on one
// PostgreSQL database, one podid agent with both endpoints and 20 pods
// fetching credentials through it, hits and misses; one replica is killed
// with SIGKILL mid-run. No pod sees a failed credential fetch.
func TestReplicaKillUnderAgentLoad(t *testing.T) {
	store := pgtest.Fresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sts := ststest.New(t)
	stsCreds, err := sts.Credentials().Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := k8stest.NewIssuer("https://ha.podid.test", "RS256")
	if err != nil {
		t.Fatal(err)
	}
	k := writeKeys(t, haCluster)
	serverEnv := append(baseEnv(t), "AWS_ACCESS_KEY_ID="+stsCreds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+stsCreds.SecretAccessKey)
	// Both replicas start at once on the empty database: the migrations
	// must cope.
	a := launchServer(t, "replica a", store, k, serverEnv, "--sts-endpoint", sts.URL)
	b := launchServer(t, "replica b", store, k, serverEnv, "--sts-endpoint", sts.URL)
	a.waitHealthy(t)
	b.waitHealthy(t)

	registerCluster(t, ctx, a.url, k, api.Cluster{Name: haCluster, Issuer: issuer.URL, Keys: api.KeySource{Kind: "jwks", JWKS: issuer.JWKS()}})
	if _, err := eksClient(b.url, k.adminCreds()).CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(haCluster), Namespace: aws.String("shop"), ServiceAccount: aws.String("web"), RoleArn: aws.String(haRole),
	}); err != nil {
		t.Fatal(err)
	}

	port, probePort, metricsPort := freePort(t), freePort(t), freePort(t)
	agentEnv := append(baseEnv(t), "PODID_AGENT_ACCESS_KEY_ID="+k.agent.AccessKeyID, "PODID_AGENT_SECRET_ACCESS_KEY="+k.agent.SecretAccessKey)
	agent := start(t, "agent", agentEnv, "agent", "--cluster-name", haCluster, "--endpoint", a.url+","+b.url,
		"--bind-hosts", "127.0.0.1", "--port", port, "--allow-loopback", "--node-name", "node-1",
		"--probe-host", "127.0.0.1", "--probe-port", probePort, "--metrics-port", metricsPort, "--log-level", "info")
	waitOK(t, "http://127.0.0.1:"+probePort+"/readyz", agent)
	agentURL := "http://127.0.0.1:" + port + "/v1/credentials"
	metricsURL := "http://127.0.0.1:" + metricsPort + "/metrics"

	hc := &http.Client{Timeout: time.Minute}
	mint := func(pod int) string {
		tok, err := issuer.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: fmt.Sprintf("web-%d", pod),
			UID: fmt.Sprintf("uid-%d", pod), NodeName: "node-1"}, time.Now(), time.Hour)
		if err != nil {
			panic(err) // signing with a test key cannot fail
		}
		return tok
	}
	if status, body := fetch(ctx, hc, agentURL, mint(0)); status != http.StatusOK {
		t.Fatalf("credentials before the load: HTTP %d %s", status, body)
	}

	var (
		requests, misses atomic.Int64
		mu               sync.Mutex
		failures         []string
		stop             = make(chan struct{})
		wg               sync.WaitGroup
	)
	for p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tok string
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				// Pods start out of step, so the misses spread over time.
				if (n+p*rotateEvery/pods)%rotateEvery == 0 || tok == "" {
					tok = mint(p)
					misses.Add(1)
				}
				status, body := fetch(ctx, hc, agentURL, tok)
				requests.Add(1)
				if status != http.StatusOK {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("pod %d request %d: HTTP %d %s", p, n, status, body))
					mu.Unlock()
				}
				time.Sleep(podPause)
			}
		}()
	}
	stopPods := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPods()

	// waitFor polls the agent's per-endpoint call counts until cond holds.
	waitFor := func(what string, cond func(calls map[endpointResult]float64) bool) map[endpointResult]float64 {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			calls, err := scrapeEndpointCalls(ctx, metricsURL)
			if err == nil && cond(calls) {
				return calls
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: agent endpoint calls %v (scrape error %v)", what, calls, err)
			}
			select {
			case <-agent.exited:
				t.Fatalf("agent exited: %v", agent.err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	before := waitFor("load on both replicas", func(c map[endpointResult]float64) bool {
		return c[endpointResult{a.url, "ok"}] >= callsBeforeKill && c[endpointResult{b.url, "ok"}] >= callsBeforeKill
	})
	reqsAtKill := requests.Load()
	a.kill9(t)
	after := waitFor("load on the surviving replica", func(c map[endpointResult]float64) bool {
		return c[endpointResult{b.url, "ok"}] >= before[endpointResult{b.url, "ok"}]+callsAfterKill &&
			c[endpointResult{a.url, "error"}] >= 1
	})
	stopPods()

	t.Logf("%d credential requests by %d pods (%d tokens minted), %d of them after the kill; agent calls per endpoint before the kill %v, at the end %v",
		requests.Load(), pods, misses.Load(), requests.Load()-reqsAtKill, before, after)
	if len(failures) > 0 {
		t.Errorf("%d of %d credential fetches failed, e.g.:\n%s", len(failures), requests.Load(), strings.Join(first(failures, 10), "\n"))
	}
	if b.exitedEarly() {
		t.Errorf("replica b exited: %v", b.err)
	}
}

// fetch asks the agent for credentials as an AWS SDK does and returns the
// status, with the body when it is not a complete set of credentials.
func fetch(ctx context.Context, hc *http.Client, url, token string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	if err != nil {
		return 0, "reading the body: " + err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(raw)
	}
	var body struct {
		AccessKeyID, SecretAccessKey, Token, Expiration string
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessKeyID == "" || body.SecretAccessKey == "" || body.Token == "" {
		// Not echoed: it may hold a secret key.
		return 0, "HTTP 200 without complete credentials"
	}
	return resp.StatusCode, ""
}

func (c *child) exitedEarly() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

type endpointResult struct{ endpoint, result string }

// scrapeEndpointCalls reads podid_agent_endpoint_calls_total from the
// agent's metrics.
func scrapeEndpointCalls(ctx context.Context, url string) (map[endpointResult]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[endpointResult]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		labels, ok := strings.CutPrefix(sc.Text(), "podid_agent_endpoint_calls_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(labels, "} ")
		if !ok {
			return nil, fmt.Errorf("metrics line %q", sc.Text())
		}
		var k endpointResult
		for _, l := range strings.Split(labels, ",") {
			name, v, _ := strings.Cut(l, "=")
			v, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("metrics line %q: %w", sc.Text(), err)
			}
			switch name {
			case "endpoint":
				k.endpoint = v
			case "result":
				k.result = v
			}
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", sc.Text(), err)
		}
		out[k] = f
	}
	return out, sc.Err()
}
