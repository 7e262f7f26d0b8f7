package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/kubeapi"
)

// clusterOptions are the flags every cluster subcommand shares.
type clusterOptions struct {
	config   string
	server   string
	serverCA string
	region   string
	keyFile  string
}

type registerOptions struct {
	*clusterOptions
	kubeconfig      string
	kubeContext     string
	followRotation  bool
	bearerTokenFile string
	serviceAccount  string
	tokenExpiration time.Duration
	apiServerURL    string
	apiServerCA     string
	liveCheck       string
	update          bool
}

// --live-check modes.
const (
	liveCheckOff  = "off"
	liveCheckOn   = "on"
	liveCheckOnly = "only"
)

func newClusterCmd() *cobra.Command {
	o := &clusterOptions{}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Register, list and delete the clusters podid server accepts tokens from",
		Long: `Manage the clusters registered with podid server, with an admin access key
given by --key-file (JSON {"accessKeyId": ..., "secretAccessKey": ...}) or the
environment variables PODID_ACCESS_KEY_ID and PODID_SECRET_ACCESS_KEY.

Every flag can also be set as PODID_<FLAG> or in the JSON --config file.`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&o.config, "config", "", "JSON config file whose keys are flag names")
	p.StringVar(&o.server, "server", "", "podid server's URL, e.g. https://podid.example:8443 (required)")
	p.StringVar(&o.serverCA, "server-ca", "", "PEM CA bundle to verify podid server's certificate (default: system roots)")
	p.StringVar(&o.region, "region", "us-east-1", "region to sign calls to podid server with")
	p.StringVar(&o.keyFile, "key-file", "", "JSON file with an admin accessKeyId and secretAccessKey")
	cmd.AddCommand(newClusterRegisterCmd(o), newClusterListCmd(o), newClusterDeleteCmd(o))
	return cmd
}

func newClusterRegisterCmd(co *clusterOptions) *cobra.Command {
	o := &registerOptions{clusterOptions: co}
	cmd := &cobra.Command{
		Use:   "register NAME",
		Short: "Register a cluster from its kubeconfig: issuer and signing keys read through the API server",
		Long: `Register a cluster with podid server. The issuer is read from the API
server's /.well-known/openid-configuration and the signing keys from its
/openid/v1/jwks, authenticated with the kubeconfig's credentials, so clusters
whose issuer URL is private work too. The kubeconfig's user needs the
ClusterRole system:service-account-issuer-discovery (cluster admins have it).

By default the keys are registered as a snapshot (key kind "jwks"): after the
cluster rotates its service-account signing key, run this again with --update.

With --follow-rotation podid server fetches <API server>/openid/v1/jwks
itself whenever it sees an unknown key (kind "kubernetes"). It then needs to
reach the API server (--api-server-url when the kubeconfig's address is only
reachable from here) and a bearer token allowed to read the keys: give one
with --bearer-token-file, or let this command mint one for a ServiceAccount
with --service-account NAMESPACE/NAME (TokenRequest, valid --token-expiration;
register again with --update before it expires). That ServiceAccount needs the
ClusterRole system:service-account-issuer-discovery, which Kubernetes binds
to all service accounts by default; where that binding was removed:

  kubectl create serviceaccount -n podid podid-jwks-reader
  kubectl create clusterrolebinding podid-jwks-reader \
    --clusterrole=system:service-account-issuer-discovery \
    --serviceaccount=podid:podid-jwks-reader

Minting the token needs "create" on serviceaccounts/token in that namespace.

With --live-check on, podid server also asks the API server about every
token (TokenReview, the answer reused for 10 s), which refuses the tokens of
deleted pods at once instead of when they expire; --live-check only skips
the signing keys and relies on TokenReview alone. Either way podid server
needs the API server's URL, CA and a bearer token, given as for
--follow-rotation, whose identity may create tokenreviews:

  kubectl create clusterrolebinding podid-token-review \
    --clusterrole=system:auth-delegator \
    --serviceaccount=podid:podid-jwks-reader

With the live check on, a credential request fails (503) while the API server
is unreachable: the check is never skipped.

Tokens and keys are sent to podid server only, never printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return layered(&co.config, func(ctx context.Context) error { return runClusterRegister(ctx, cmd.OutOrStdout(), args[0], o) })(cmd, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context (default: the current context)")
	f.BoolVar(&o.followRotation, "follow-rotation", false, "let podid server refetch the keys from the API server (key kind kubernetes)")
	f.StringVar(&o.bearerTokenFile, "bearer-token-file", "", "with --follow-rotation or --live-check: file holding the token podid server authenticates to the API server with")
	f.StringVar(&o.serviceAccount, "service-account", "", "with --follow-rotation or --live-check: NAMESPACE/NAME of a ServiceAccount to mint that token for")
	f.DurationVar(&o.tokenExpiration, "token-expiration", 365*24*time.Hour, "lifetime requested for the minted token (the API server may shorten it)")
	f.StringVar(&o.apiServerURL, "api-server-url", "", "with --follow-rotation or --live-check: API server URL as podid server reaches it (default: the kubeconfig's)")
	f.StringVar(&o.apiServerCA, "api-server-ca", "", "with --follow-rotation or --live-check: PEM CA bundle for the API server's certificate (default: the kubeconfig's)")
	f.StringVar(&o.liveCheck, "live-check", liveCheckOff, "check every token with the API server's TokenReview too (on), instead of the signing keys (only), or not (off)")
	f.BoolVar(&o.update, "update", false, "update an existing registration instead of creating one")
	return cmd
}

func newClusterListCmd(o *clusterOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the registered clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return layered(&o.config, func(ctx context.Context) error {
				c, err := o.client()
				if err != nil {
					return err
				}
				clusters, err := c.ListClusters(ctx)
				if err != nil {
					return explainServerError(err, o.server, "listing clusters")
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tISSUER\tKEYS\tMODIFIED")
				for _, cl := range clusters {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cl.Name, cl.Issuer, describeKeys(cl.Keys), cl.ModifiedAt.Time().UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})(cmd, args)
		},
	}
}

func newClusterDeleteCmd(o *clusterOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster and all its pod identity associations",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return layered(&o.config, func(ctx context.Context) error {
				c, err := o.client()
				if err != nil {
					return err
				}
				if err := c.DeleteCluster(ctx, args[0]); err != nil {
					return explainServerError(err, o.server, fmt.Sprintf("deleting cluster %q", args[0]))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted cluster %q and its associations\n", args[0])
				return nil
			})(cmd, args)
		},
	}
}

// client is the admin API client the flags describe.
func (o *clusterOptions) client() (*api.Client, error) {
	if o.server == "" {
		return nil, errors.New("--server is required: podid server's URL")
	}
	key, err := loadAccessKey(o.keyFile, "PODID_ACCESS_KEY_ID", "PODID_SECRET_ACCESS_KEY", `an admin access key (scope "admin") from podid server's keys file`)
	if err != nil {
		return nil, err
	}
	hc, err := serverHTTPClient(o.serverCA)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 30 * time.Second
	return &api.Client{
		Endpoint:    o.server,
		Credentials: credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, ""),
		Region:      o.region,
		HTTPClient:  hc,
	}, nil
}

func runClusterRegister(ctx context.Context, out io.Writer, name string, o *registerOptions) error {
	switch o.liveCheck {
	case liveCheckOff, liveCheckOn:
	case liveCheckOnly:
		if o.followRotation {
			return errors.New("--live-check only registers no signing keys, so --follow-rotation does not apply")
		}
	default:
		return fmt.Errorf("--live-check %q is not one of %s, %s, %s", o.liveCheck, liveCheckOff, liveCheckOn, liveCheckOnly)
	}
	needAPIServer := o.followRotation || o.liveCheck != liveCheckOff
	if !needAPIServer && (o.bearerTokenFile != "" || o.serviceAccount != "" || o.apiServerURL != "" || o.apiServerCA != "") {
		return errors.New("--bearer-token-file, --service-account, --api-server-url and --api-server-ca only apply with --follow-rotation or --live-check")
	}
	if needAPIServer && (o.bearerTokenFile == "") == (o.serviceAccount == "") {
		what := "--follow-rotation"
		if !o.followRotation {
			what = "--live-check " + o.liveCheck
		}
		return fmt.Errorf("%s needs exactly one of --bearer-token-file and --service-account NAMESPACE/NAME: podid server authenticates to the API server with that token", what)
	}
	client, err := o.client()
	if err != nil {
		return err
	}
	restCfg, err := kubeapi.Load(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	disc, err := kubeapi.Discover(ctx, restCfg)
	if err != nil {
		return fmt.Errorf("reading the service-account issuer of the cluster at %s: %w", restCfg.Host, err)
	}

	cluster := api.Cluster{Name: name, Issuer: disc.Issuer}
	var keysNote, liveNote string
	var src api.KeySource
	var tokenNote string
	if needAPIServer {
		if src, tokenNote, err = o.apiServerSource(ctx, restCfg); err != nil {
			return err
		}
	}
	switch {
	case o.liveCheck == liveCheckOnly:
		cluster.Keys = src
		cluster.Keys.Kind = identity.KeysTokenReview
		keysNote = fmt.Sprintf("none: podid server has every token checked by %s/apis/authentication.k8s.io/v1/tokenreviews with %s", strings.TrimSuffix(src.URL, "/"), tokenNote)
	case o.followRotation:
		cluster.Keys = src
		cluster.Keys.Kind = identity.KeysKubernetes
		keysNote = fmt.Sprintf("podid server fetches %s/openid/v1/jwks with %s", strings.TrimSuffix(src.URL, "/"), tokenNote)
	default:
		cluster.Keys = src // the API server, for the live check; empty without one
		cluster.Keys.Kind, cluster.Keys.JWKS = identity.KeysJWKS, string(disc.JWKS)
		keysNote = fmt.Sprintf("snapshot of %d key(s) (%s); after the cluster rotates its signing key, run this again with --update, or use --follow-rotation",
			len(disc.KeyIDs), strings.Join(disc.KeyIDs, ", "))
	}
	if o.liveCheck == liveCheckOn {
		cluster.Keys.LiveCheck = identity.LiveCheckTokenReview
		liveNote = fmt.Sprintf("every token also checked by %s/apis/authentication.k8s.io/v1/tokenreviews with %s", strings.TrimSuffix(src.URL, "/"), tokenNote)
	}

	verb, call := "registered", client.RegisterCluster
	if o.update {
		verb, call = "updated", client.UpdateCluster
	}
	got, err := call(ctx, cluster)
	if err != nil {
		var ae *api.APIError
		switch {
		case errors.As(err, &ae) && ae.StatusCode == http.StatusConflict && !o.update:
			return fmt.Errorf("cluster %q is already registered: add --update to replace its issuer and keys (%w)", name, err)
		case errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && o.update:
			return fmt.Errorf("cluster %q is not registered yet: run without --update (%w)", name, err)
		}
		return explainServerError(err, o.server, fmt.Sprintf("registering cluster %q", name))
	}
	fmt.Fprintf(out, "%s cluster %q with podid server %s\n", verb, got.Name, o.server)
	fmt.Fprintf(out, "  issuer: %s\n", got.Issuer)
	fmt.Fprintf(out, "  keys:   %s: %s\n", cluster.Keys.Kind, keysNote)
	if liveNote != "" {
		fmt.Fprintf(out, "  live check: %s\n", liveNote)
	}
	return nil
}

// apiServerSource is how podid server reaches the API server, for kind
// kubernetes, kind tokenReview and the live check: its URL, its CA and a
// bearer token. The note says where the token came from.
func (o *registerOptions) apiServerSource(ctx context.Context, restCfg *rest.Config) (api.KeySource, string, error) {
	src := api.KeySource{URL: restCfg.Host}
	if o.apiServerURL != "" {
		src.URL = o.apiServerURL
	}
	if !strings.HasPrefix(src.URL, "https://") {
		return src, "", fmt.Errorf("the API server URL %q is not https: podid server talks to the API server over HTTPS only (set --api-server-url)", src.URL)
	}
	var ca []byte
	var err error
	if o.apiServerCA != "" {
		ca, err = os.ReadFile(o.apiServerCA)
	} else {
		ca, err = kubeapi.CAPEM(restCfg)
		if err == nil && len(ca) == 0 && restCfg.Insecure {
			err = errors.New("the kubeconfig skips TLS verification of the API server, so it has no CA to hand to podid server: give --api-server-ca")
		}
	}
	if err != nil {
		return src, "", err
	}
	src.CACert = string(ca)

	var note string
	if o.bearerTokenFile != "" {
		raw, err := os.ReadFile(o.bearerTokenFile)
		if err != nil {
			return src, "", fmt.Errorf("--bearer-token-file: %w", err)
		}
		src.BearerToken = strings.TrimSpace(string(raw))
		if src.BearerToken == "" {
			return src, "", fmt.Errorf("--bearer-token-file %s is empty", o.bearerTokenFile)
		}
		note = "the token from " + o.bearerTokenFile
	} else {
		ns, sa, ok := strings.Cut(o.serviceAccount, "/")
		if !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
			return src, "", fmt.Errorf("--service-account %q is not NAMESPACE/NAME", o.serviceAccount)
		}
		cs, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return src, "", fmt.Errorf("Kubernetes client: %w", err)
		}
		tok, exp, err := kubeapi.ServiceAccountToken(ctx, cs, ns, sa, o.tokenExpiration)
		if err != nil {
			return src, "", err
		}
		src.BearerToken = tok
		note = fmt.Sprintf("a token of ServiceAccount %s/%s expiring %s (register again with --update before then)", ns, sa, exp.UTC().Format(time.RFC3339))
	}
	return src, note, nil
}

// describeKeys summarises a key source for a listing, without secrets.
func describeKeys(k api.KeySource) string {
	switch k.Kind {
	case identity.KeysKubernetes, identity.KeysJWKSURL, identity.KeysTokenReview:
		return k.Kind + " " + k.URL + liveSuffix(k)
	case identity.KeysJWKSFile:
		return k.Kind + " " + k.Path + liveSuffix(k)
	default:
		return k.Kind + liveSuffix(k)
	}
}

func liveSuffix(k api.KeySource) string {
	if k.LiveCheck == "" || k.Kind == identity.KeysTokenReview {
		return ""
	}
	return " +" + k.LiveCheck + " " + k.URL
}

// explainServerError adds what to do to podid server's usual refusals.
func explainServerError(err error, server, what string) error {
	var ae *api.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Type == "UnrecognizedClientException":
			return fmt.Errorf("%s: podid server at %s does not know this access key; use one from its keys file: %w", what, server, err)
		case ae.Type == "InvalidSignatureException":
			return fmt.Errorf("%s: the secret access key does not match the access key id: %w", what, err)
		case ae.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%s: the access key may not do this; use a key of scope \"admin\": %w", what, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// accessKey is a podid access key, from a file or the environment.
type accessKey struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

// loadAccessKey reads the key from path, or when path is "" from the two
// environment variables; want says which key, for the error.
func loadAccessKey(path, idEnv, secretEnv, want string) (accessKey, error) {
	var k accessKey
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return k, fmt.Errorf("access key: %w", err)
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			return k, fmt.Errorf("access key file %s is not JSON {\"accessKeyId\",\"secretAccessKey\"}: %w", path, err)
		}
	} else {
		k.AccessKeyID, k.SecretAccessKey = os.Getenv(idEnv), os.Getenv(secretEnv)
	}
	if k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return k, fmt.Errorf("access key missing: give --key-file or set %s and %s (%s)", idEnv, secretEnv, want)
	}
	return k, nil
}

// serverHTTPClient is the client for podid server, trusting caFile when set.
func serverHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--server-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("--server-ca %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}
