package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/node"
)

type agentOptions struct {
	config           string
	clusterName      string
	endpoints        []string
	serverCA         string
	region           string
	keyFile          string
	nodeName         string
	port             int
	bindHosts        []string
	disableIPv6      bool
	allowLoopback    bool
	probePort        int
	metricsPort      int
	probeHost        string
	maxCacheSize     int
	maxCredentialAge time.Duration
	removeTaint      string
	logLevel         string
}

func newAgentCmd() *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent that serves /v1/credentials to the AWS SDKs",
		Long: `Run podid agent, the node credential agent (a drop-in for the EKS Pod
Identity Agent). Pods' AWS SDKs call it on 169.254.170.23:80 and
[fd00:ec2::23]:80 with their projected service-account token; the agent
exchanges the token with podid server, caches the credentials and renews them
ahead of expiry.

The agent signs its calls with an access key of scope "agent": give it with
--key-file (JSON {"accessKeyId": ..., "secretAccessKey": ...}) or the
environment variables PODID_AGENT_ACCESS_KEY_ID and
PODID_AGENT_SECRET_ACCESS_KEY. Run "podid agent initialize" first (once per
boot, with NET_ADMIN) so the link-local addresses exist on the node.

Every flag can also be set as PODID_<FLAG> or in the JSON --config file.`,
		Args: cobra.NoArgs,
		RunE: layered(&o.config, func(ctx context.Context) error { return runAgent(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "JSON config file whose keys are these flag names")
	f.StringVar(&o.clusterName, "cluster-name", "", "name of this cluster as registered with podid server (required)")
	f.StringSliceVar(&o.endpoints, "endpoint", nil, "podid server's URL, e.g. https://podid.example:8443 (required); several replicas as a comma-separated list or a repeated flag, used round-robin with failover")
	f.StringVar(&o.serverCA, "server-ca", "", "PEM CA bundle to verify podid server's certificate (default: system roots)")
	f.StringVar(&o.region, "region", "us-east-1", "region to sign calls to podid server with")
	f.StringVar(&o.keyFile, "key-file", "", "JSON file with the agent's accessKeyId and secretAccessKey")
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name, sent as eksNodeName and used for --remove-taint (env NODE_NAME)")
	f.IntVar(&o.port, "port", 80, "port to serve /v1/credentials on")
	f.StringSliceVar(&o.bindHosts, "bind-hosts", []string{node.DefaultIPv4, node.DefaultIPv6}, "addresses to serve on")
	f.BoolVar(&o.disableIPv6, "disable-ipv6", false, "do not bind IPv6 addresses from --bind-hosts")
	f.BoolVar(&o.allowLoopback, "allow-loopback", false, "accept Host headers of loopback addresses (for tests and local runs)")
	f.IntVar(&o.probePort, "probe-port", 2703, "port of /healthz and /readyz (0 disables)")
	f.IntVar(&o.metricsPort, "metrics-port", 2705, "port of the Prometheus /metrics endpoint (0 disables)")
	f.StringVar(&o.probeHost, "probe-host", "", "address the probe and metrics ports bind to (default: all, so the kubelet can probe the node IP)")
	f.IntVar(&o.maxCacheSize, "max-cache-size", 2000, "maximum number of cached credentials")
	f.DurationVar(&o.maxCredentialAge, "max-credential-age", 3*time.Hour, "renew cached credentials older than this")
	f.StringVar(&o.removeTaint, "remove-taint", "", "taint to remove from --node-name once serving, e.g. podid.io/agent-not-ready:NoSchedule")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newAgentInitializeCmd())
	return cmd
}

func newAgentInitializeCmd() *cobra.Command {
	cfg := node.DefaultLinkConfig()
	var disableIPv6 bool
	cmd := &cobra.Command{
		Use:   "initialize",
		Short: "Create the link carrying 169.254.170.23 and fd00:ec2::23 on this node (needs NET_ADMIN)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if disableIPv6 {
				cfg.IPv6 = ""
			}
			if err := node.EnsureLink(cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "link %s is up with %s\n", cfg.Name, strings.TrimSuffix(cfg.IPv4+" "+cfg.IPv6, " "))
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.Name, "link-name", cfg.Name, "name of the link to create")
	cmd.Flags().StringVar(&cfg.IPv4, "ipv4", cfg.IPv4, "IPv4 address to put on the link")
	cmd.Flags().StringVar(&cfg.IPv6, "ipv6", cfg.IPv6, "IPv6 address to put on the link")
	cmd.Flags().BoolVar(&disableIPv6, "disable-ipv6", false, "configure IPv4 only")
	return cmd
}

// agentKey is the agent's access key, from a file or the environment.
type agentKey struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

func loadAgentKey(path string) (agentKey, error) {
	var k agentKey
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return k, fmt.Errorf("agent key: %w", err)
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			return k, fmt.Errorf("agent key file %s is not JSON {\"accessKeyId\",\"secretAccessKey\"}: %w", path, err)
		}
	} else {
		k.AccessKeyID = os.Getenv("PODID_AGENT_ACCESS_KEY_ID")
		k.SecretAccessKey = os.Getenv("PODID_AGENT_SECRET_ACCESS_KEY")
	}
	if k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return k, errors.New("agent key missing: give --key-file or set PODID_AGENT_ACCESS_KEY_ID and PODID_AGENT_SECRET_ACCESS_KEY (an access key of scope \"agent\" from podid server's keys file)")
	}
	return k, nil
}

func (o *agentOptions) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	if o.serverCA != "" {
		pemData, err := os.ReadFile(o.serverCA)
		if err != nil {
			return nil, fmt.Errorf("--server-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("--server-ca %s holds no PEM certificate", o.serverCA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

func runAgent(ctx context.Context, o *agentOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	switch {
	case o.clusterName == "":
		return errors.New("--cluster-name is required")
	case len(o.endpoints) == 0:
		return errors.New("--endpoint is required: podid server's URL")
	case o.port < 0 || o.port > 65535:
		return fmt.Errorf("--port %d is not a port number", o.port)
	case o.removeTaint != "" && o.nodeName == "":
		return errors.New("--remove-taint needs --node-name (or NODE_NAME from the downward API)")
	}
	if o.removeTaint != "" {
		if _, err := node.ParseTaint(o.removeTaint); err != nil {
			return fmt.Errorf("--remove-taint: %w", err)
		}
	}
	endpoints, err := parseEndpoints(o.endpoints)
	if err != nil {
		return err
	}
	key, err := loadAgentKey(o.keyFile)
	if err != nil {
		return err
	}
	hc, err := o.httpClient()
	if err != nil {
		return err
	}
	var hosts []string
	for _, h := range o.bindHosts {
		h = strings.Trim(h, "[]")
		if o.disableIPv6 && strings.Contains(h, ":") {
			continue
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return errors.New("no address left to bind: check --bind-hosts and --disable-ipv6")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)
	creds := credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, "")
	clients := make([]*api.Client, 0, len(endpoints))
	for _, e := range endpoints {
		clients = append(clients, &api.Client{Endpoint: e, Credentials: creds, Region: o.region, HTTPClient: hc})
	}
	remote := agent.NewRemote(agent.RemoteConfig{
		Clients:  clients,
		Cluster:  o.clusterName,
		NodeName: o.nodeName,
		Logger:   log,
		Metrics:  metrics,
	})
	cache := agent.NewCache(agent.CacheConfig{Next: remote, MaxEntries: o.maxCacheSize, MaxAge: o.maxCredentialAge, Logger: log, Metrics: metrics})

	var ready atomic.Bool
	allowed := append([]string(nil), agent.DefaultAllowedHosts...)
	for _, h := range hosts {
		allowed = append(allowed, hostForHeader(h))
	}
	handler := agent.NewHandler(agent.HandlerConfig{Retriever: cache, AllowedHosts: allowed, AllowLoopback: o.allowLoopback, Logger: log, Metrics: metrics, Ready: ready.Load})

	lns, err := node.Listen(ctx, hosts, o.port)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	serve := func(ln net.Listener, h http.Handler) {
		serveInGroup(ctx, g, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 40 * time.Second,
			IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, ln)
	}
	for _, ln := range lns {
		serve(ln, handler)
	}
	side := []struct {
		port int
		h    http.Handler
		what string
	}{
		{o.probePort, agent.NewProbeHandler(ready.Load), "probes"},
		{o.metricsPort, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), "metrics"},
	}
	for _, s := range side {
		if s.port == 0 {
			continue
		}
		addr := net.JoinHostPort(o.probeHost, strconv.Itoa(s.port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("%s port: listening on %s: %w", s.what, addr, err)
		}
		serve(ln, s.h)
	}
	g.Go(func() error {
		// Run ends with ctx's error when the agent is told to stop; that is
		// a clean exit, not a failure.
		if err := cache.Run(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	})

	ready.Store(true)
	addrs := make([]string, 0, len(lns))
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr().String())
	}
	log.Info("podid agent serving", "addresses", addrs, "cluster", o.clusterName, "endpoints", endpoints, "probePort", o.probePort, "metricsPort", o.metricsPort)
	if o.removeTaint != "" {
		g.Go(func() error { removeTaintUntilDone(ctx, log, o.nodeName, o.removeTaint); return nil })
	}
	return g.Wait()
}

// parseEndpoints checks the --endpoint URLs. Each flag value may itself be
// a comma-separated list (pflag splits those), so the flag, PODID_ENDPOINT
// and the config file all take "https://a:8443,https://b:8443".
func parseEndpoints(raw []string) ([]string, error) {
	var out []string
	for _, e := range raw {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, errors.New("--endpoint: empty URL in the list")
		}
		u, err := url.Parse(e)
		switch {
		case err != nil:
			// The value is not echoed: a mistyped URL may hold a secret.
			return nil, errors.New("--endpoint: a URL in the list does not parse; want http(s)://host:port")
		case u.User != nil:
			return nil, fmt.Errorf("--endpoint %s: the URL must not carry user information; the agent signs with its key", u.Redacted())
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return nil, fmt.Errorf("--endpoint %q: want an http:// or https:// URL of podid server", e)
		}
		if slices.Contains(out, e) {
			return nil, fmt.Errorf("--endpoint %s is listed twice", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// hostForHeader writes an address the way it appears in a Host header.
func hostForHeader(h string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

// removeTaintUntilDone retries the taint removal with backoff: the agent
// serves either way, but pods wait on the taint.
func removeTaintUntilDone(ctx context.Context, log *slog.Logger, nodeName, taint string) {
	delay := time.Second
	for {
		err := node.RemoveTaint(ctx, node.TaintConfig{NodeName: nodeName, Taint: taint})
		if err == nil {
			log.Info("removed node taint", "node", nodeName, "taint", taint)
			return
		}
		log.Warn("removing node taint failed; retrying", "node", nodeName, "taint", taint, "error", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Minute)
	}
}
