package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/internal/kubeapi"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/webhook/certs"
)

type webhookOptions struct {
	config            string
	clusterName       string
	server            string
	serverCA          string
	region            string
	keyFile           string
	listen            string
	kubeconfig        string
	namespace         string
	serviceName       string
	secretName        string
	webhookConfigName string
	tlsCertFile       string
	tlsKeyFile        string
	certDir           string
	tlsSecret         string
	extraDNSNames     []string
	extraIPs          []net.IP
	caValidity        time.Duration
	certValidity      time.Duration
	certCheckInterval time.Duration
	audience          string
	tokenExpiration   time.Duration
	tokenJitter       float64
	mountPath         string
	credentialsURI    string
	refreshInterval   time.Duration
	metricsPort       int
	metricsHost       string
	logLevel          string
}

// serviceAccountNamespaceFile holds the pod's namespace in every pod that
// mounts a service-account token.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// defaultNamespace is the pod's own namespace when running in a cluster.
func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	return "podid"
}

func newWebhookCmd() *cobra.Command {
	o := &webhookOptions{}
	def := webhook.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Run the mutating admission webhook that injects pod identity into pods",
		Long: `Run podid webhook, the mutating admission webhook. For every pod created
whose service account has a pod identity association at podid server, it adds
what EKS adds: AWS_CONTAINER_CREDENTIALS_FULL_URI,
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE and the projected
eks-pod-identity-token volume. Which service accounts have an association is
polled from podid server (--refresh-interval) with a read-only key given by
--key-file (JSON {"accessKeyId": ..., "secretAccessKey": ...}) or the
environment variables PODID_WEBHOOK_ACCESS_KEY_ID and
PODID_WEBHOOK_SECRET_ACCESS_KEY. Until the first load, pods are admitted
unmutated; run it with failurePolicy: Ignore.

TLS, one of:
  (default)        the webhook runs its own CA: it keeps the CA and the serving
                   certificate in the Secret --secret-name of --namespace
                   (created, renewed when a third of the lifetime is left,
                   shared by all replicas) and patches the caBundle of
                   --webhook-config-name. RBAC: get, create, update on that
                   Secret; get, update on that MutatingWebhookConfiguration.
  --tls-secret     serve a Secret kept by cert-manager (read only; its
                   cainjector patches the caBundle). RBAC: get on the Secret.
  --cert-dir, or --tls-cert-file with --tls-key-file
                   serve PEM files, re-read every minute (a mounted Secret).

/healthz and /readyz (ready once the association index has loaded and a
certificate is loaded) are served on --listen and, with /metrics, on
--metrics-port over plain HTTP.

Every flag can also be set as PODID_<FLAG> or in the JSON --config file.`,
		Args: cobra.NoArgs,
		RunE: layered(&o.config, func(ctx context.Context) error { return runWebhook(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "JSON config file whose keys are these flag names")
	f.StringVar(&o.clusterName, "cluster-name", "", "name of this cluster as registered with podid server (required)")
	f.StringVar(&o.server, "server", "", "podid server's URL, e.g. https://podid.example:8443 (required)")
	f.StringVar(&o.serverCA, "server-ca", "", "PEM CA bundle to verify podid server's certificate (default: system roots)")
	f.StringVar(&o.region, "region", "us-east-1", "region to sign calls to podid server with")
	f.StringVar(&o.keyFile, "key-file", "", "JSON file with a read-only accessKeyId and secretAccessKey")
	f.StringVar(&o.listen, "listen", ":8443", "HTTPS address to serve /mutate on")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	f.StringVar(&o.namespace, "namespace", defaultNamespace(), "namespace of the webhook's Service and Secret (default: the pod's namespace)")
	f.StringVar(&o.serviceName, "service-name", "podid-webhook", "name of the webhook's Service; the certificate covers its DNS names")
	f.StringVar(&o.secretName, "secret-name", "podid-webhook-tls", "Secret holding the managed CA and serving certificate")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", "podid-webhook", `MutatingWebhookConfiguration whose caBundle is patched ("" to skip)`)
	f.StringVar(&o.tlsCertFile, "tls-cert-file", "", "PEM serving certificate file (with --tls-key-file; no CA management)")
	f.StringVar(&o.tlsKeyFile, "tls-key-file", "", "PEM private key file for --tls-cert-file")
	f.StringVar(&o.certDir, "cert-dir", "", "directory with tls.crt and tls.key, e.g. a mounted cert-manager Secret")
	f.StringVar(&o.tlsSecret, "tls-secret", "", "kubernetes.io/tls Secret in --namespace kept by cert-manager, served read-only")
	f.StringSliceVar(&o.extraDNSNames, "extra-dns-names", nil, "more DNS names for the managed serving certificate")
	f.IPSliceVar(&o.extraIPs, "extra-ips", nil, "IP addresses for the managed serving certificate")
	f.DurationVar(&o.caValidity, "ca-validity", certs.DefaultCAValidity, "lifetime of a generated CA")
	f.DurationVar(&o.certValidity, "cert-validity", certs.DefaultCertValidity, "lifetime of a generated serving certificate")
	f.DurationVar(&o.certCheckInterval, "cert-check-interval", certs.DefaultCheckInterval, "how often the certificate is checked for renewal or reloaded")
	f.StringVar(&o.audience, "token-audience", def.Audience, "audience of the projected token (podid server accepts only the default)")
	f.DurationVar(&o.tokenExpiration, "token-expiration", def.TokenExpiration, "requested lifetime of the projected token")
	f.Float64Var(&o.tokenJitter, "token-jitter", def.TokenJitter, "fraction in [0, 1) by which the token lifetime is shortened per workload")
	f.StringVar(&o.mountPath, "mount-path", def.MountPath, "where containers see the token volume")
	f.StringVar(&o.credentialsURI, "credentials-uri", def.CredentialsURI, "node agent URL injected as AWS_CONTAINER_CREDENTIALS_FULL_URI (IPv6: http://[fd00:ec2::23]/v1/credentials)")
	f.DurationVar(&o.refreshInterval, "refresh-interval", 30*time.Second, "how often the association index is reloaded from podid server")
	f.IntVar(&o.metricsPort, "metrics-port", 9090, "plain-HTTP port of /metrics, /healthz and /readyz (0 disables)")
	f.StringVar(&o.metricsHost, "metrics-host", "", "address the metrics port binds to (default: all)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// mutation is the webhook.Config the flags describe.
func (o *webhookOptions) mutation() webhook.Config {
	return webhook.Config{
		Audience:        o.audience,
		TokenExpiration: o.tokenExpiration,
		TokenJitter:     o.tokenJitter,
		MountPath:       o.mountPath,
		CredentialsURI:  o.credentialsURI,
	}
}

func runWebhook(ctx context.Context, o *webhookOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	switch {
	case o.clusterName == "":
		return errors.New("--cluster-name is required")
	case o.server == "":
		return errors.New("--server is required: podid server's URL")
	case o.metricsPort < 0 || o.metricsPort > 65535:
		return fmt.Errorf("--metrics-port %d is not a port number", o.metricsPort)
	}
	mutation := o.mutation()
	if err := mutation.Validate(); err != nil {
		return fmt.Errorf("token settings: %w", err)
	}
	key, err := loadAccessKey(o.keyFile, "PODID_WEBHOOK_ACCESS_KEY_ID", "PODID_WEBHOOK_SECRET_ACCESS_KEY", `a read-only access key (scope "read-only") from podid server's keys file`)
	if err != nil {
		return err
	}
	hc, err := serverHTTPClient(o.serverCA)
	if err != nil {
		return err
	}
	source, tlsMode, err := o.certSource(log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := webhook.NewMetrics(reg)
	index, err := webhook.NewAssociationIndex(webhook.IndexConfig{
		Client:          webhook.NewEKSClient(o.server, o.region, credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, ""), hc),
		Cluster:         o.clusterName,
		RefreshInterval: o.refreshInterval,
		Logger:          log,
		Metrics:         metrics,
	})
	if err != nil {
		return err
	}
	ready := func() bool { return index.Ready() && source.Ready() }

	mux := http.NewServeMux()
	mux.Handle("/mutate", webhook.NewHandler(webhook.HandlerConfig{Mutation: mutation, Index: index, Logger: log, Metrics: metrics}))
	addProbes(mux, ready)

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	var side net.Listener
	if o.metricsPort != 0 {
		addr := net.JoinHostPort(o.metricsHost, strconv.Itoa(o.metricsPort))
		if side, err = net.Listen("tcp", addr); err != nil {
			ln.Close()
			return fmt.Errorf("metrics port: listening on %s: %w", addr, err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	serve := func(ln net.Listener, h http.Handler, tlsConfig *tls.Config) {
		serveInGroup(ctx, g, &http.Server{Handler: h, TLSConfig: tlsConfig, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
			WriteTimeout: 15 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10,
			// TLS handshake errors (probes, scanners) are noise at the
			// usual levels.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}, ln)
	}
	serve(ln, mux, &tls.Config{GetCertificate: source.GetCertificate, MinVersion: tls.VersionTLS12})
	if side != nil {
		sideMux := http.NewServeMux()
		sideMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		addProbes(sideMux, ready)
		serve(side, sideMux, nil)
	}
	g.Go(func() error { return index.Run(ctx) })
	g.Go(func() error { return source.Run(ctx) })

	log.Info("podid webhook serving", "address", ln.Addr().String(), "cluster", o.clusterName, "server", o.server,
		"tls", tlsMode, "metricsPort", o.metricsPort)
	return g.Wait()
}

// addProbes adds /healthz (the process serves) and /readyz (it can admit
// pods with a certificate the API server trusts).
func addProbes(mux *http.ServeMux, ready func() bool) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: association index or serving certificate not loaded yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
}

// certSource picks the TLS mode from the flags.
func (o *webhookOptions) certSource(log *slog.Logger) (certs.Source, string, error) {
	files := o.tlsCertFile != "" || o.tlsKeyFile != ""
	modes := 0
	for _, on := range []bool{files, o.certDir != "", o.tlsSecret != ""} {
		if on {
			modes++
		}
	}
	switch {
	case modes > 1:
		return nil, "", errors.New("give only one of --tls-cert-file/--tls-key-file, --cert-dir and --tls-secret")
	case files && (o.tlsCertFile == "" || o.tlsKeyFile == ""):
		return nil, "", errors.New("--tls-cert-file and --tls-key-file must be given together")
	case o.certDir != "":
		o.tlsCertFile, o.tlsKeyFile, files = filepath.Join(o.certDir, "tls.crt"), filepath.Join(o.certDir, "tls.key"), true
	}
	if files {
		s, err := certs.NewFileSource(o.tlsCertFile, o.tlsKeyFile, o.certCheckInterval, log)
		if err != nil {
			return nil, "", err
		}
		return s, "files " + o.tlsCertFile, nil
	}

	if o.namespace == "" {
		return nil, "", errors.New("--namespace is required")
	}
	restCfg, err := kubeapi.Load(o.kubeconfig, "")
	if err != nil {
		return nil, "", fmt.Errorf("%w (or serve static files with --tls-cert-file and --tls-key-file)", err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, "", fmt.Errorf("Kubernetes client: %w", err)
	}
	if o.tlsSecret != "" {
		return certs.NewSecretSource(client, o.namespace, o.tlsSecret, o.certCheckInterval, log), "secret " + o.namespace + "/" + o.tlsSecret, nil
	}
	if o.serviceName == "" || o.secretName == "" {
		return nil, "", errors.New("--service-name and --secret-name are required to manage the certificate")
	}
	m, err := certs.NewManager(certs.ManagerConfig{
		Client:            client,
		Namespace:         o.namespace,
		SecretName:        o.secretName,
		DNSNames:          append(certs.ServiceDNSNames(o.serviceName, o.namespace), o.extraDNSNames...),
		IPs:               o.extraIPs,
		WebhookConfigName: o.webhookConfigName,
		CAValidity:        o.caValidity,
		CertValidity:      o.certValidity,
		CheckInterval:     o.certCheckInterval,
		Logger:            log,
	})
	if err != nil {
		return nil, "", err
	}
	return m, "managed secret " + o.namespace + "/" + o.secretName, nil
}
