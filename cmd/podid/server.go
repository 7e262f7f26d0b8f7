package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/k8s"
	"github.com/podid/podid/internal/ratelimit"
	"github.com/podid/podid/internal/server"
	"github.com/podid/podid/internal/store"
	"github.com/podid/podid/internal/store/cache"
	"github.com/podid/podid/internal/sts"
)

type serverOptions struct {
	config          string
	listen          string
	tlsCert         string
	tlsKey          string
	dataDir         string
	store           string
	keysFile        string
	region          string
	account         string
	stsEndpoint     string
	stsRegion       string
	sessionDuration time.Duration
	logLevel        string
	cacheTTL        time.Duration
	perKey          float64
	perNamespace    float64
	maxConcurrent   int
	metricsListen   string
	policyFile      string
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "podid")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "podid")
	}
	return "podid-data"
}

func newServerCmd() *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: association API, AssumeRoleForPodIdentity and the audit ledger",
		Long: `Run podid server.

Every setting is a flag, an environment variable PODID_<FLAG> (upper case,
dashes as underscores) or a key of the JSON --config file, in that order of
precedence. With no settings at all it listens on 127.0.0.1:8080, keeps its
SQLite database and access keys in the data directory, and generates an
admin key on first start.

The AWS credentials used to call STS come from the default AWS credential
chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity,
instance role, ...).`,
		Args: cobra.NoArgs,
		RunE: layered(&o.config, func(ctx context.Context) error { return runServer(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", os.Getenv("PODID_CONFIG"), "JSON config file whose keys are these flag names (env PODID_CONFIG)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate file; serves HTTPS when set with --tls-key")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory for the default SQLite database and keys file")
	f.StringVar(&o.store, "store", "", "store URL: sqlite:///path/podid.db or postgres://user:pass@host/db (default: <data-dir>/podid.db)")
	f.StringVar(&o.keysFile, "keys-file", "", "JSON file of access keys allowed to call the APIs (default: <data-dir>/keys.json, created with an admin key if missing)")
	f.StringVar(&o.region, "region", "us-east-1", "AWS region used in the ARNs podid returns")
	f.StringVar(&o.account, "account", "000000000000", "12-digit AWS account id used in the ARNs podid returns")
	f.StringVar(&o.stsEndpoint, "sts-endpoint", "", "STS endpoint URL (default: AWS's regional endpoint)")
	f.StringVar(&o.stsRegion, "sts-region", "", "region to sign STS calls for (default: --region)")
	f.DurationVar(&o.sessionDuration, "session-duration", identity.DefaultSessionDuration, "lifetime of the credentials requested from STS (15m to 12h)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.cacheTTL, "cache-ttl", cache.DefaultTTL, "longest time a cluster or association lookup is served from this replica's memory; writes through any replica invalidate sooner (0 disables the cache)")
	f.Float64Var(&o.perKey, "rate-limit-per-key", 100, "AssumeRoleForPodIdentity calls per second per access key (burst 2x; 0 disables)")
	f.Float64Var(&o.perNamespace, "rate-limit-per-namespace", 20, "AssumeRoleForPodIdentity calls per second per cluster namespace (burst 2x; 0 disables)")
	f.IntVar(&o.maxConcurrent, "max-concurrent-sts", 64, "STS calls in flight at most, shared round robin between namespaces (0: unlimited)")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "address for Prometheus /metrics, e.g. :9090 (default: off)")
	f.StringVar(&o.policyFile, "policy-file", "", `JSON rules for which role ARNs may be bound where: {"rules":[{"name","clusters","namespaces","roleArns"}]} (globs)`)
	return cmd
}

func runServer(ctx context.Context, o *serverOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key must be given together")
	}
	if o.store == "" || o.keysFile == "" {
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return fmt.Errorf("creating data directory: %w", err)
		}
	}
	if o.store == "" {
		o.store = "sqlite://" + filepath.Join(o.dataDir, "podid.db")
	}
	if o.keysFile == "" {
		o.keysFile = filepath.Join(o.dataDir, "keys.json")
		if err := ensureKeysFile(o.keysFile, log); err != nil {
			return err
		}
	}
	keys, err := auth.LoadKeyring(o.keysFile)
	if err != nil {
		return fmt.Errorf("keys file: %w", err)
	}
	for _, w := range keys.Warnings() {
		log.Warn("keys file", "path", o.keysFile, "warning", w)
	}

	st, err := store.Open(ctx, o.store)
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()
	lookups, stopCache, err := cacheLookups(ctx, st, o.cacheTTL, log)
	if err != nil {
		return err
	}
	defer stopCache()

	stsRegion := o.stsRegion
	if stsRegion == "" {
		stsRegion = o.region
	}
	issuer, err := sts.New(ctx, sts.Config{Endpoint: o.stsEndpoint, Region: stsRegion})
	if err != nil {
		return fmt.Errorf("setting up STS: %w", err)
	}
	if o.perKey < 0 || o.perNamespace < 0 || o.maxConcurrent < 0 {
		return errors.New("--rate-limit-per-key, --rate-limit-per-namespace and --max-concurrent-sts must not be negative")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	limiter := ratelimit.New(ratelimit.Config{
		PerKey: rate.Limit(o.perKey), KeyBurst: int(2 * o.perKey),
		PerNamespace: rate.Limit(o.perNamespace), NamespaceBurst: int(2 * o.perNamespace),
		MaxConcurrent: o.maxConcurrent, Registerer: reg,
	})
	var policy *identity.Policy
	if o.policyFile != "" {
		if policy, err = identity.LoadPolicy(o.policyFile); err != nil {
			return err
		}
		log.Info("policy rules loaded", "file", o.policyFile, "rules", len(policy.Rules))
	}
	svc, err := identity.New(identity.Config{
		Policy:          policy,
		Limiter:         limiter,
		Store:           lookups,
		Verifier:        k8s.NewVerifier(k8s.VerifierConfig{Logger: log}),
		Issuer:          issuer,
		Region:          o.region,
		Account:         o.account,
		SessionDuration: o.sessionDuration,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Service: svc, Auth: &auth.Verifier{Keys: keys}, KeyLimiter: limiter, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	if o.metricsListen != "" {
		mln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", o.metricsListen, err)
		}
		msrv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info("metrics listening", "address", mln.Addr().String())
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	endpoint := fmt.Sprintf("%s://%s", scheme, ln.Addr())
	log.Info("podid server listening", "endpoint", endpoint, "store", store.Redacted(o.store), "keysFile", o.keysFile, "region", o.region, "account", o.account)
	log.Info("next: register a cluster with POST "+endpoint+"/podid/v1/clusters, then create associations with the AWS CLI or SDK",
		"example", "aws eks create-pod-identity-association --endpoint-url "+endpoint+" --cluster-name <cluster> --namespace <ns> --service-account <sa> --role-arn <arn>",
		"credentials", "use an access key from "+o.keysFile)
	return srv.Run(ctx, ln, o.tlsCert, o.tlsKey)
}

// ensureKeysFile writes a keys file with one fresh admin key when none
// exists, so a first run needs no setup. The secret goes only to the file.
func ensureKeysFile(path string, log *slog.Logger) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	k, err := auth.GenerateKey("admin", auth.ScopeAdmin, nil)
	if err != nil {
		return err
	}
	doc := map[string]any{"keys": []map[string]any{{
		"name": k.Name, "accessKeyId": k.AccessKeyID, "secretAccessKey": k.SecretAccessKey, "scope": string(k.Scope),
	}}}
	raw, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(path, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing keys file: %w", err)
	}
	log.Info("generated an admin access key", "path", path, "accessKeyId", k.AccessKeyID)
	return nil
}

// cacheLookups puts this replica's lookup cache in front of st, for the
// credential hot path, and starts following the store's change feed. With
// PostgreSQL every replica's writes arrive by LISTEN/NOTIFY; otherwise this
// process is taken to be the only writer, its own writes invalidate, and a
// write by anything else is seen within the TTL. A TTL of 0 disables the
// cache. stop ends the feed; call it before closing st.
func cacheLookups(ctx context.Context, st identity.Store, ttl time.Duration, log *slog.Logger) (lookups identity.Store, stop func(), err error) {
	switch {
	case ttl < 0:
		return nil, nil, fmt.Errorf("--cache-ttl must not be negative, got %v", ttl)
	case ttl == 0:
		log.Info("lookup cache disabled: every credential request reads the store")
		return st, func() {}, nil
	}
	opts := cache.Options{TTL: ttl, Logger: log}
	mode := "local"
	if feed, ok := st.(cache.Feed); ok {
		opts.Feed = feed
		mode = "listen"
	}
	c := cache.New(st, opts)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			log.Error("lookup cache stopped", "error", err)
		}
	}()
	if mode == "listen" {
		log.Info("lookup cache on; invalidated by the store's change feed (LISTEN/NOTIFY), so writes through any replica apply within milliseconds",
			"invalidation", mode, "ttl", ttl)
	} else {
		log.Info("lookup cache on; invalidated by this process's own writes, other writers to the store are seen within the TTL",
			"invalidation", mode, "ttl", ttl)
	}
	return c, func() { cancel(); <-done }, nil
}
