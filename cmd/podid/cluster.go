package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/kubeapi"
)

// clusterOptions are the flags every cluster subcommand shares: the client
// commands' own, plus the deprecated --key-file.
type clusterOptions struct {
	clientOptions
	keyFile string
}

type registerOptions struct {
	clusterOptions
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
	cmd := &cobra.Command{
		Use:     "cluster",
		Aliases: []string{"clusters"},
		Short:   "Register, list and delete the clusters podid server accepts tokens from",
		Long: `Manage the clusters registered with podid server through its admin API.

Like every client command, these sign their requests with the standard AWS
credential chain: put a podid access key (from the server's keys file) in
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or in an AWS profile (--profile).
list needs a read-only or admin key, register and delete an admin key.
--key-file (JSON {"accessKeyId": ..., "secretAccessKey": ...}) still works
but is deprecated.

Exit codes: 0 ok, 1 usage or rejected parameters, 2 not found, 3 access
denied or no/unknown credentials, 4 conflict (already registered), 5 server
(or, for register, the cluster's API server) unreachable, unavailable or
throttling, 6 other server errors.`,
	}
	cmd.AddCommand(newClusterRegisterCmd(), newClusterListCmd(), newClusterDeleteCmd())
	return cmd
}

// addClusterFlags registers the shared client flags and --key-file on cmd.
func (o *clusterOptions) addClusterFlags(cmd *cobra.Command) {
	o.addClientFlags(cmd)
	cmd.Flags().StringVar(&o.keyFile, "key-file", "", "JSON file with an accessKeyId and secretAccessKey (deprecated: use the AWS credential chain)")
	// MarkDeprecated hides the flag and warns on stderr when it is used.
	_ = cmd.Flags().MarkDeprecated("key-file", "put the key in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile (--profile) instead")
}

// connectCluster is connect, signing with --key-file's key when given.
func (o *clusterOptions) connectCluster(ctx context.Context, errOut io.Writer) (*podidClient, error) {
	if o.keyFile != "" {
		if o.profile != "" {
			return nil, usageErrorf("give only one of --key-file and --profile")
		}
		key, err := loadAccessKey(o.keyFile, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "an access key from podid server's keys file")
		if err != nil {
			return nil, &exitError{code: exitUsage, err: err}
		}
		o.credentials = credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, "")
	} else if os.Getenv("PODID_ACCESS_KEY_ID") != "" {
		// The variables these commands used to read; ignoring them
		// silently would sign with some other key.
		fmt.Fprintln(errOut, "podid: warning: PODID_ACCESS_KEY_ID and PODID_SECRET_ACCESS_KEY are no longer read; put the key in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	return o.connect(ctx)
}

func newClusterRegisterCmd() *cobra.Command {
	o := &registerOptions{}
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
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
			return runClusterRegister(ctx, cmd, args[0], o)
		})(cmd, args)
	}
	o.addClusterFlags(cmd)
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

func newClusterListCmd() *cobra.Command {
	o := &clusterOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registered clusters (read-only or admin key)",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
		c, err := o.connectCluster(ctx, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		clusters, err := c.admin.ListClusters(ctx)
		if err != nil {
			return err
		}
		if clusters == nil {
			clusters = []api.Cluster{}
		}
		return o.render(cmd.OutOrStdout(), api.ListClustersResponse{Clusters: clusters}, func(w io.Writer) error {
			tw := newTable(w)
			fmt.Fprintln(tw, "NAME\tISSUER\tKEYS\tMODIFIED")
			for _, cl := range clusters {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cl.Name, cl.Issuer, describeKeys(cl.Keys), cl.ModifiedAt.Time().UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		})
	})
	o.addClusterFlags(cmd)
	return cmd
}

// clusterDeleted is what `cluster delete -o json|yaml` prints.
type clusterDeleted struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

func newClusterDeleteCmd() *cobra.Command {
	o := &clusterOptions{}
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster and all its pod identity associations (admin key)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
			c, err := o.connectCluster(ctx, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := c.admin.DeleteCluster(ctx, args[0]); err != nil {
				return err
			}
			return o.render(cmd.OutOrStdout(), clusterDeleted{Name: args[0], Deleted: true}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted cluster %q and its associations\n", args[0])
				return err
			})
		})(cmd, args)
	}
	o.addClusterFlags(cmd)
	return cmd
}

func runClusterRegister(ctx context.Context, cmd *cobra.Command, name string, o *registerOptions) error {
	switch o.liveCheck {
	case liveCheckOff, liveCheckOn:
	case liveCheckOnly:
		if o.followRotation {
			return usageErrorf("--live-check only registers no signing keys, so --follow-rotation does not apply")
		}
	default:
		return usageErrorf("--live-check %q is not one of %s, %s, %s", o.liveCheck, liveCheckOff, liveCheckOn, liveCheckOnly)
	}
	needAPIServer := o.followRotation || o.liveCheck != liveCheckOff
	if !needAPIServer && (o.bearerTokenFile != "" || o.serviceAccount != "" || o.apiServerURL != "" || o.apiServerCA != "") {
		return usageErrorf("--bearer-token-file, --service-account, --api-server-url and --api-server-ca only apply with --follow-rotation or --live-check")
	}
	if needAPIServer && (o.bearerTokenFile == "") == (o.serviceAccount == "") {
		what := "--follow-rotation"
		if !o.followRotation {
			what = "--live-check " + o.liveCheck
		}
		return usageErrorf("%s needs exactly one of --bearer-token-file and --service-account NAMESPACE/NAME: podid server authenticates to the API server with that token", what)
	}
	c, err := o.connectCluster(ctx, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	restCfg, err := kubeapi.Load(o.kubeconfig, o.kubeContext)
	if err != nil {
		return kubeError(err)
	}
	disc, err := kubeapi.Discover(ctx, restCfg)
	if err != nil {
		return kubeError(fmt.Errorf("reading the service-account issuer of the cluster at %s: %w", restCfg.Host, err))
	}

	cluster := api.Cluster{Name: name, Issuer: disc.Issuer}
	var keysNote, liveNote string
	var src api.KeySource
	var tokenNote string
	if needAPIServer {
		if src, tokenNote, err = o.apiServerSource(ctx, restCfg); err != nil {
			return kubeError(err)
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

	verb, call := "registered", c.admin.RegisterCluster
	if o.update {
		verb, call = "updated", c.admin.UpdateCluster
	}
	got, err := call(ctx, cluster)
	if err != nil {
		var ae *api.APIError
		switch {
		case errors.As(err, &ae) && ae.StatusCode == http.StatusConflict && !o.update:
			return &exitError{code: exitConflict, err: fmt.Errorf("cluster %q is already registered: %s", name, ae.Message),
				hint: "add --update to replace its issuer and keys"}
		case errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && o.update:
			return &exitError{code: exitNotFound, err: fmt.Errorf("cluster %q is not registered yet: %s", name, ae.Message),
				hint: "run without --update to register it"}
		}
		return err
	}
	// The server never echoes the bearer token; drop it anyway, so no
	// output format can show it.
	got.Keys.BearerToken = ""
	return o.render(cmd.OutOrStdout(), api.ClusterResponse{Cluster: *got}, func(w io.Writer) error {
		fmt.Fprintf(w, "%s cluster %q with podid server %s\n", verb, got.Name, o.server)
		fmt.Fprintf(w, "  issuer: %s\n", got.Issuer)
		fmt.Fprintf(w, "  keys:   %s: %s\n", cluster.Keys.Kind, keysNote)
		if liveNote != "" {
			fmt.Fprintf(w, "  live check: %s\n", liveNote)
		}
		return nil
	})
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

// kubeError gives an error from the cluster's API server or kubeconfig an
// exit code of its own, so explainError does not blame podid server for it.
func kubeError(err error) error {
	var ee *exitError
	if err == nil || errors.As(err, &ee) {
		return err
	}
	msg := err.Error()
	var ne net.Error
	switch {
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err),
		strings.Contains(msg, "(HTTP 401)"), strings.Contains(msg, "(HTTP 403)"):
		return &exitError{code: exitDenied, err: err}
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &ne), isDNSError(err):
		return &exitError{code: exitUnavailable, err: fmt.Errorf("cannot reach the cluster's API server: %w", err),
			hint: "check the kubeconfig's server address (or --api-server-url) and that the API server is up"}
	}
	return &exitError{code: exitUsage, err: err}
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
