// Command scaleserver measures podid server on a store holding many
// associations: start-up time, resident memory after serving, and
// AssumeRoleForPodIdentity throughput; the "100,000 associations" table of
// docs/benchmarks.md.
//
// For each size it populates a fresh store with 3 clusters of that many
// associations (package scale), starts the real podid binary on it a few
// times to time the start-up (exec to the first 200 from /healthz), then
// sends AssumeRoleForPodIdentity requests for random associations, each with
// the token of a distinct pod, through the in-process STS test server, and
// reads VmRSS and VmHWM from /proc/<pid>/status.
//
//	go run ./test/scale/scaleserver [-backend sqlite|postgres] [-per 1000,100000] [-requests 3000]
//
// -backend postgres creates and drops a database on the server named by
// PODID_TEST_POSTGRES (see scripts/postgres-test.sh). Linux only; everything
// binds to 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"math"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/test/scale"
)

const clusters = 3

type options struct {
	backend  string
	per      []int
	requests int
	conns    int
	starts   int
	podid    string
	cacheTTL string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scaleserver:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scaleserver: "+format+"\n", args...)
}

func run() error {
	var o options
	var per string
	fs := flag.NewFlagSet("scaleserver", flag.ContinueOnError)
	fs.StringVar(&o.backend, "backend", "sqlite", "sqlite or postgres (PODID_TEST_POSTGRES names the server)")
	fs.StringVar(&per, "per", "1000,100000", "comma-separated associations per cluster, one run each")
	fs.IntVar(&o.requests, "requests", 3000, "AssumeRoleForPodIdentity requests per run")
	fs.IntVar(&o.conns, "conns", 8, "concurrent clients")
	fs.IntVar(&o.starts, "starts", 3, "server starts timed per run")
	fs.StringVar(&o.podid, "podid", "", "podid binary (default: go build ./cmd/podid into a temporary directory)")
	fs.StringVar(&o.cacheTTL, "cache-ttl", "", "--cache-ttl for the server (default: the server's)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	for f := range strings.SplitSeq(per, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 100 {
			return fmt.Errorf("-per: %q is not a number of at least 100", f)
		}
		o.per = append(o.per, n)
	}
	if o.backend != "sqlite" && o.backend != "postgres" {
		return fmt.Errorf("-backend must be sqlite or postgres")
	}
	if o.requests < 1 || o.conns < 1 || o.starts < 1 {
		return errors.New("-requests, -conns and -starts must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "scaleserver-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.podid == "" {
		o.podid = filepath.Join(dir, "podid")
		logf("building podid")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.podid, "github.com/podid/podid/cmd/podid")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/podid (run from inside the podid module): %w", err)
		}
	}

	fmt.Printf("Machine: %s. Backend: %s. %d requests from %d clients per run.\n\n", describeMachine(), o.backend, o.requests, o.conns)
	fmt.Println("| associations | populate | start-up (median of " + strconv.Itoa(o.starts) + ") | RSS idle | RSS after requests | peak RSS | requests/s | p50 | p99 | failed |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range o.per {
		r, err := measure(ctx, o, dir, n)
		if err != nil {
			return fmt.Errorf("%d per cluster: %w", n, err)
		}
		fmt.Printf("| %d × %d | %v | %v | %.0f MiB | %.0f MiB | %.0f MiB | %.0f | %v | %v | %d |\n",
			clusters, n, r.populate.Round(time.Millisecond), r.startup.Round(time.Millisecond),
			mib(r.idle.rss), mib(r.after.rss), mib(r.after.hwm), r.rate, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.failed)
	}
	return nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

type result struct {
	populate, startup time.Duration
	idle, after       memory
	rate              float64
	p50, p99          time.Duration
	failed            int
}

func measure(ctx context.Context, o options, dir string, per int) (*result, error) {
	r := &result{}
	issuer, err := k8stest.NewIssuer("https://scale.podid.test", "RS256")
	if err != nil {
		return nil, err
	}
	layout := scale.Layout{Clusters: clusters, PerCluster: per, Issuer: issuer.URL,
		Keys: identity.KeySource{Kind: identity.KeysJWKS, JWKS: issuer.JWKS()}}

	start := time.Now()
	var storeURL string
	switch o.backend {
	case "sqlite":
		path := filepath.Join(dir, fmt.Sprintf("podid-%d.db", per))
		if err := scale.PopulateSQLite(ctx, path, layout); err != nil {
			return nil, err
		}
		storeURL = "sqlite://" + path
	case "postgres":
		url, drop, err := freshDatabase(ctx)
		if err != nil {
			return nil, err
		}
		defer drop()
		if err := scale.PopulatePostgres(ctx, url, layout); err != nil {
			return nil, err
		}
		storeURL = url
	}
	r.populate = time.Since(start)
	logf("%d × %d associations populated in %v", clusters, per, r.populate.Round(time.Millisecond))

	fakeSTS := ststest.Start()
	defer fakeSTS.Close()
	stsCreds, err := fakeSTS.Credentials().Retrieve(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for c := range clusters {
		names = append(names, scale.ClusterName(c))
	}
	agentKey, err := auth.GenerateKey("agent", auth.ScopeAgent, names)
	if err != nil {
		return nil, err
	}
	keysFile := filepath.Join(dir, "keys.json")
	if err := writeKeys(keysFile, agentKey); err != nil {
		return nil, err
	}

	env := append(childEnv(dir), "AWS_ACCESS_KEY_ID="+stsCreds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+stsCreds.SecretAccessKey)
	var startups []time.Duration
	var srv *child
	for i := range o.starts {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"server", "--listen", addr, "--store", storeURL, "--keys-file", keysFile,
			"--sts-endpoint", fakeSTS.URL, "--account", "111122223333", "--log-level", "warn"}
		if o.cacheTTL != "" {
			args = append(args, "--cache-ttl", o.cacheTTL)
		}
		t0 := time.Now()
		c, err := startChild(ctx, env, o.podid, args...)
		if err != nil {
			return nil, err
		}
		if err := waitOK(ctx, "http://"+addr+"/healthz", c); err != nil {
			c.stop()
			return nil, err
		}
		startups = append(startups, time.Since(t0))
		if i < o.starts-1 {
			c.stop()
			continue
		}
		srv = c
		srv.addr = addr
	}
	defer srv.stop()
	slices.Sort(startups)
	r.startup = startups[len(startups)/2]
	time.Sleep(time.Second) // let the start-up garbage be collected
	if r.idle, err = readProcStatus(srv.cmd.Process.Pid); err != nil {
		return nil, err
	}

	logf("minting %d pod tokens", o.requests)
	type call struct {
		cluster, token, role string
	}
	calls := make([]call, o.requests)
	rnd := mathrand.New(mathrand.NewPCG(uint64(per), 7))
	now := time.Now()
	for j := range calls {
		c, i := rnd.IntN(clusters), rnd.IntN(per)
		ns, sa := scale.Key(i)
		pod := fmt.Sprintf("pod-%d", j)
		tok, err := issuer.Token(k8stest.Pod{Namespace: ns, ServiceAccount: sa, Name: pod, UID: rand.Text(), NodeName: "node-1"}, now, time.Hour)
		if err != nil {
			return nil, err
		}
		calls[j] = call{scale.ClusterName(c), tok, scale.RoleARN(c, i)}
	}

	logf("sending %d AssumeRoleForPodIdentity requests from %d clients", o.requests, o.conns)
	client := &api.Client{Endpoint: "http://" + srv.addr, Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(agentKey.AccessKeyID, agentKey.SecretAccessKey, ""),
		HTTPClient:  &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: o.conns}}}
	latencies := make([]time.Duration, o.requests)
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		first  error
	)
	start = time.Now()
	for range o.conns {
		wg.Go(func() {
			for j := int(next.Add(1)) - 1; j < len(calls); j = int(next.Add(1)) - 1 {
				t := time.Now()
				res, err := client.AssumeRoleForPodIdentity(ctx, calls[j].cluster, api.AssumeRoleForPodIdentityRequest{Token: calls[j].token})
				latencies[j] = time.Since(t)
				// arn:aws:sts::…:assumed-role/<role name>/<session>
				if err == nil && !strings.Contains(res.AssumedRoleUser.Arn, "/"+roleName(calls[j].role)+"/") {
					err = fmt.Errorf("got role %s, want %s", res.AssumedRoleUser.Arn, calls[j].role)
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		logf("first failure: %v", first)
	}
	r.failed = int(failed.Load())
	r.rate = float64(o.requests) / elapsed.Seconds()
	slices.Sort(latencies)
	r.p50 = latencies[len(latencies)/2]
	r.p99 = latencies[int(math.Ceil(float64(len(latencies))*0.99))-1]
	if r.after, err = readProcStatus(srv.cmd.Process.Pid); err != nil {
		return nil, err
	}
	return r, nil
}

// roleName is the last part of a role ARN, which the assumed-role ARN
// carries.
func roleName(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// freshDatabase creates a database on the PODID_TEST_POSTGRES server.
func freshDatabase(ctx context.Context) (url string, drop func(), err error) {
	base := os.Getenv("PODID_TEST_POSTGRES")
	if base == "" {
		return "", nil, errors.New(`-backend postgres needs PODID_TEST_POSTGRES; run eval "$(scripts/postgres-test.sh)"`)
	}
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PODID_TEST_POSTGRES: %w", err)
	}
	name := "podid_scale_" + strings.ToLower(rand.Text()[:10])
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		_ = admin.Close(ctx)
		return "", nil, err
	}
	cfg := admin.Config()
	_ = admin.Close(ctx)
	u := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", cfg.User, cfg.Password, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), name)
	return u, func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	}, nil
}

func writeKeys(path string, k auth.Key) error {
	raw := fmt.Sprintf(`{"keys":[{"name":%q,"accessKeyId":%q,"secretAccessKey":%q,"scope":%q,"clusters":[%q,%q,%q]}]}`,
		k.Name, k.AccessKeyID, k.SecretAccessKey, k.Scope, scale.ClusterName(0), scale.ClusterName(1), scale.ClusterName(2))
	return os.WriteFile(path, []byte(raw), 0o600)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// childEnv keeps the developer's AWS and podid settings out of the server.
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

type child struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	err    error
}

func startChild(ctx context.Context, env []string, path string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting podid server: %w", err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop asks the server to end and waits for it.
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

// waitOK polls url until it answers 200, tightly, since the time it takes
// is the start-up figure.
func waitOK(ctx context.Context, url string, c *child) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("podid server exited: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("%s never answered 200", url)
}

// memory is a process's resident set from /proc/<pid>/status, in KiB.
type memory struct{ rss, hwm int64 }

func readProcStatus(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("reading the server's memory (Linux only): %w", err)
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			m.rss = n
		case "VmHWM":
			m.hwm = n
		}
	}
	return m, sc.Err()
}

// describeMachine names the CPU, core count and Go version.
func describeMachine() string {
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPU (%s), %s, %s/%s", runtime.NumCPU(), cpu, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
