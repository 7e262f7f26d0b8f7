// Command agentload is the scripted load run behind the "podid agent" table
// in docs/benchmarks.md.
//
// It builds podid, starts the STS test server in-process and podid server,
// podid agent and a bare net/http handler as separate processes on
// 127.0.0.1, warms the agent with distinct pod tokens, then drives the
// agent's /v1/credentials (all cache hits) and the bare handler, which writes
// a body of the same size, with the same keep-alive load generator,
// alternating between them. It prints a markdown report with throughput,
// latency percentiles, their ratios and the agent's RSS.
//
//	go run ./test/load/agentload [-tokens 2000] [-conns 16] [-duration 10s] [-rounds 2]
//
// Everything binds to 127.0.0.1 and stops by itself; the child processes
// also die with this one (Linux: parent-death signal; elsewhere: SIGTERM on
// the way out).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/sts/ststest"
)

const (
	clusterName = "load"
	namespace   = "load"
	saName      = "app"
	nodeName    = "node-1"
	roleARN     = "arn:aws:iam::111122223333:role/load"
	// podHost is the Host header the AWS SDKs send to the agent.
	podHost = "169.254.170.23"
)

type options struct {
	podid     string
	tokens    int
	conns     int
	warmConns int
	duration  time.Duration
	warm      time.Duration
	rounds    int
	settle    time.Duration
	timeout   time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare" {
		if err := runBare(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "agentload bare:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentload:", err)
		os.Exit(1)
	}
}

func run() error {
	o := options{}
	fs := flag.NewFlagSet("agentload", flag.ContinueOnError)
	fs.StringVar(&o.podid, "podid", "", "podid binary to run (default: go build ./cmd/podid into a temporary directory)")
	fs.IntVar(&o.tokens, "tokens", 2000, "distinct pod tokens to cache in the agent and cycle over")
	fs.IntVar(&o.conns, "conns", 16, "concurrent keep-alive clients during the measured runs")
	fs.IntVar(&o.warmConns, "warm-conns", 8, "concurrent clients while filling the agent's cache")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of one measured run")
	fs.DurationVar(&o.warm, "warm", 2*time.Second, "unrecorded load before each measured run")
	fs.IntVar(&o.rounds, "rounds", 2, "agent/bare alternations")
	fs.DurationVar(&o.settle, "settle", time.Minute, "before each measured run, wait up to this long for the machine to be quiet (0: do not wait)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up after this long")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if o.tokens < 1 || o.conns < 1 || o.warmConns < 1 || o.rounds < 1 || o.duration <= 0 {
		return errors.New("-tokens, -conns, -warm-conns, -rounds and -duration must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	rep, err := measure(ctx, o)
	if err != nil {
		return err
	}
	rep.write(os.Stdout)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "agentload: "+format+"\n", args...)
}

// measure brings the processes up, runs the load and tears everything down.
func measure(ctx context.Context, o options) (*report, error) {
	rep := &report{opts: o, machine: describeMachine(), loadBefore: loadAvg(), started: time.Now()}
	dir, err := os.MkdirTemp("", "agentload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	podid := o.podid
	if podid == "" {
		podid = filepath.Join(dir, "podid")
		logf("building podid")
		goTool := os.Getenv("GO")
		if goTool == "" {
			goTool = "go"
		}
		build := exec.CommandContext(ctx, goTool, "build", "-o", podid, "github.com/podid/podid/cmd/podid")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/podid (run from inside the podid module): %w", err)
		}
	}

	fakeSTS := ststest.Start()
	defer fakeSTS.Close()
	issuer, err := k8stest.NewIssuer("https://load.podid.test", "RS256")
	if err != nil {
		return nil, err
	}
	admin, err := auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	if err != nil {
		return nil, err
	}
	agentKey, err := auth.GenerateKey("agent", auth.ScopeAgent, []string{clusterName})
	if err != nil {
		return nil, err
	}
	keysFile := filepath.Join(dir, "keys.json")
	if err := writeJSON(keysFile, map[string]any{"keys": []auth.Key{admin, agentKey}}); err != nil {
		return nil, err
	}
	agentKeyFile := filepath.Join(dir, "agent-key.json")
	if err := writeJSON(agentKeyFile, map[string]string{"accessKeyId": agentKey.AccessKeyID, "secretAccessKey": agentKey.SecretAccessKey}); err != nil {
		return nil, err
	}

	// podid server, calling the in-process STS test server.
	stsCreds, err := fakeSTS.Credentials().Retrieve(ctx)
	if err != nil {
		return nil, err
	}
	serverAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	serverEnv := append(childEnv(dir), "AWS_ACCESS_KEY_ID="+stsCreds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+stsCreds.SecretAccessKey)
	server, err := startChild(ctx, "server", serverEnv, podid, "server", "--listen", serverAddr, "--data-dir", filepath.Join(dir, "data"),
		"--keys-file", keysFile, "--sts-endpoint", fakeSTS.URL, "--account", "111122223333", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer server.stop()
	serverURL := "http://" + serverAddr
	if err := waitOK(ctx, serverURL+"/healthz", server); err != nil {
		return nil, err
	}
	if err := register(ctx, serverURL, admin, issuer); err != nil {
		return nil, err
	}

	// podid agent on 127.0.0.1.
	var ports [3]string
	for i := range ports {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, ports[i], _ = net.SplitHostPort(addr)
	}
	agentProc, err := startChild(ctx, "agent", childEnv(dir), podid, "agent", "--cluster-name", clusterName, "--endpoint", serverURL,
		"--key-file", agentKeyFile, "--node-name", nodeName, "--bind-hosts", "127.0.0.1", "--port", ports[0], "--allow-loopback",
		"--probe-host", "127.0.0.1", "--probe-port", ports[1], "--metrics-port", ports[2],
		"--max-cache-size", strconv.Itoa(max(o.tokens, 2000)), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer agentProc.stop()
	agentURL := "http://127.0.0.1:" + ports[0] + "/v1/credentials"
	metricsURL := "http://127.0.0.1:" + ports[2] + "/metrics"
	if err := waitOK(ctx, "http://127.0.0.1:"+ports[1]+"/readyz", agentProc); err != nil {
		return nil, err
	}
	logf("podid agent is pid %d", agentProc.pid())
	rep.rssIdle, _ = readProcStatus(agentProc.pid())

	logf("minting %d pod tokens", o.tokens)
	tokens, err := mintTokens(issuer, o.tokens)
	if err != nil {
		return nil, err
	}
	logf("filling the agent's cache (its client-side limit of 20 server calls/s makes this take about %s)", time.Duration(o.tokens/20)*time.Second)
	body, err := fillCache(ctx, agentURL, tokens, o.warmConns)
	if err != nil {
		return nil, err
	}
	rep.bodySize = len(body)
	rep.rssWarm, _ = readProcStatus(agentProc.pid())
	before, err := scrape(ctx, metricsURL)
	if err != nil {
		return nil, err
	}
	rep.cacheEntries = before["podid_agent_cache_entries"]
	rep.heapWarm = before["go_memstats_heap_inuse_bytes"]

	// The bare handler serves the very body the agent answered with.
	bodyFile := filepath.Join(dir, "body.json")
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bare, err := startChild(ctx, "bare", childEnv(dir), self, "bare", "-listen", "127.0.0.1:0", "-body", bodyFile)
	if err != nil {
		return nil, err
	}
	defer bare.stop()
	bareAddr, err := bare.readLine(ctx, "listening ")
	if err != nil {
		return nil, err
	}
	bareURL := "http://" + bareAddr + "/v1/credentials"
	logf("bare handler is pid %d", bare.pid())

	targets := []struct {
		name, url string
		pid       int
	}{{"agent", agentURL, agentProc.pid()}, {"bare", bareURL, bare.pid()}}
	for round := 1; round <= o.rounds; round++ {
		for _, tg := range targets {
			if o.settle > 0 && !waitQuiet(ctx, o.settle) {
				logf("the machine is still busy after %s; measuring anyway", o.settle)
			}
			logf("round %d/%d: %s, %d clients, %s (+%s unrecorded)", round, o.rounds, tg.name, o.conns, o.duration, o.warm)
			res, err := drive(ctx, tg.url, tg.pid, tokens, o.conns, o.warm, o.duration)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tg.name, err)
			}
			res.target, res.round = tg.name, round
			rep.runs = append(rep.runs, res)
		}
	}
	after, err := scrape(ctx, metricsURL)
	if err != nil {
		return nil, err
	}
	rep.missesDuringLoad = after["podid_agent_cache_misses_total"] - before["podid_agent_cache_misses_total"]
	rep.hitsDuringLoad = after["podid_agent_cache_hits_total"] - before["podid_agent_cache_hits_total"]
	rep.heapAfter = after["go_memstats_heap_inuse_bytes"]
	rep.rssAfter, _ = readProcStatus(agentProc.pid())
	rep.bareRSS, _ = readProcStatus(bare.pid())
	rep.loadAfter = loadAvg()
	rep.elapsed = time.Since(rep.started)
	return rep, nil
}

func writeJSON(path string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// childEnv keeps the developer's AWS and podid settings out of the children.
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "PODID_") {
			continue
		}
		env = append(env, kv)
	}
	none := filepath.Join(dir, "none")
	return append(env, "AWS_CONFIG_FILE="+none, "AWS_SHARED_CREDENTIALS_FILE="+none, "AWS_EC2_METADATA_DISABLED=true", "AWS_REGION=us-east-1")
}

// register creates the cluster and the one association every token maps to.
func register(ctx context.Context, serverURL string, admin auth.Key, issuer *k8stest.Issuer) error {
	creds := credentials.NewStaticCredentialsProvider(admin.AccessKeyID, admin.SecretAccessKey, "")
	c := &api.Client{Endpoint: serverURL, Credentials: creds}
	if _, err := c.RegisterCluster(ctx, api.Cluster{Name: clusterName, Issuer: issuer.URL, Keys: api.KeySource{Kind: "jwks", JWKS: issuer.JWKS()}}); err != nil {
		return fmt.Errorf("registering the cluster: %w", err)
	}
	ec := eks.New(eks.Options{BaseEndpoint: aws.String(serverURL), Region: "us-east-1", Credentials: creds})
	if _, err := ec.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(clusterName), Namespace: aws.String(namespace), ServiceAccount: aws.String(saName), RoleArn: aws.String(roleARN),
	}); err != nil {
		return fmt.Errorf("creating the association: %w", err)
	}
	return nil
}

// mintTokens makes n tokens of distinct pods under one service account.
func mintTokens(issuer *k8stest.Issuer, n int) ([]string, error) {
	tokens := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	now := time.Now()
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				pod := fmt.Sprintf("app-%05d", i)
				tokens[i], errs[i] = issuer.Token(k8stest.Pod{Namespace: namespace, ServiceAccount: saName, Name: pod, UID: "uid-" + pod, NodeName: nodeName}, now, 24*time.Hour)
			}
		})
	}
	wg.Wait()
	return tokens, errors.Join(errs...)
}

// fillCache fetches credentials for every token once, retrying the agent's
// throttling answers, and returns one response body.
func fillCache(ctx context.Context, url string, tokens []string, conns int) ([]byte, error) {
	client := &http.Client{Transport: newTransport(conns), Timeout: time.Minute}
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		done  atomic.Int64
		mu    sync.Mutex
		first []byte
		errs  []error
	)
	fetch := func(tok string) ([]byte, error) {
		var last error
		for attempt := 0; attempt < 10; attempt++ {
			body, status, err := get(ctx, client, url, tok)
			switch {
			case err != nil:
				last = err
			case status == http.StatusOK:
				return body, nil
			default:
				last = fmt.Errorf("status %d: %s", status, body)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		return nil, last
	}
	for range conns {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(tokens); i = int(next.Add(1)) - 1 {
				body, err := fetch(tokens[i])
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if first == nil {
					first = body
				}
				mu.Unlock()
				if err != nil {
					return
				}
				if d := done.Add(1); d%500 == 0 {
					logf("cached %d/%d", d, len(tokens))
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("filling the cache: %w", errors.Join(errs...))
	}
	return first, nil
}

func get(ctx context.Context, client *http.Client, url, tok string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Host = podHost
	req.Header.Set("Authorization", tok)
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return body, resp.StatusCode, err
}

// child is a process started by this run.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdout *bufio.Reader
	exited chan struct{}
	err    error
}

func startChild(ctx context.Context, name string, env []string, path string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = dieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// The bare handler exits when its stdin closes, whatever happened here.
	if _, err := cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdout: bufio.NewReader(out), exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to end and waits for it.
func (c *child) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// readLine returns the rest of the first stdout line starting with prefix.
func (c *child) readLine(ctx context.Context, prefix string) (string, error) {
	type line struct {
		s   string
		err error
	}
	ch := make(chan line, 1)
	go func() {
		for {
			s, err := c.stdout.ReadString('\n')
			if err != nil || strings.HasPrefix(s, prefix) {
				ch <- line{strings.TrimSpace(strings.TrimPrefix(s, prefix)), err}
				return
			}
		}
	}()
	select {
	case l := <-ch:
		if l.err != nil {
			return "", fmt.Errorf("%s printed no %q line: %w", c.name, prefix, l.err)
		}
		return l.s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// waitOK polls url until it answers 200, the child exits or 30s pass.
func waitOK(ctx context.Context, url string, c *child) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s never answered 200", c.name, url)
}

// scrape reads the agent's metrics, summing each name over its labels.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics sums the samples of the Prometheus text format by metric name.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}
