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
	"net/url"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/smithy-go"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/api"
)

// Exit codes of the client commands. Scripts may rely on them.
const (
	exitOK          = 0
	exitUsage       = 1 // bad flags or arguments, or a parameter the server rejected
	exitNotFound    = 2 // the cluster, association or service account has nothing
	exitDenied      = 3 // no credentials, unknown key, bad signature or too little scope
	exitConflict    = 4 // the thing already exists or is owned by someone else
	exitUnavailable = 5 // the server cannot be reached, is unavailable or throttles
	exitServer      = 6 // any other server error
)

// exitError is an error that makes podid exit with code. hint says what to
// do about it and is printed on its own line.
type exitError struct {
	code int
	err  error
	hint string
}

func (e *exitError) Error() string {
	if e.hint == "" {
		return e.err.Error()
	}
	return e.err.Error() + "\n  hint: " + e.hint
}

func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit code for err: the code of an *exitError in
// its chain, else 1 (flag parsing and the long-running commands' errors).
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	if err == nil {
		return exitOK
	}
	return exitUsage
}

// usageErrorf is a mistake in the command line.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// clientOptions are the settings every client command shares: where podid
// server is and how to sign for it. Credentials come from the standard AWS
// credential chain, so a podid access key lives where AWS keys live:
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile in ~/.aws.
type clientOptions struct {
	server   string
	profile  string
	region   string
	serverCA string
	output   string

	// credentials, when set, replace the AWS credential chain (the
	// deprecated --key-file of the cluster commands).
	credentials aws.CredentialsProvider

	// transport is the HTTP transport connect built, closed when the
	// command ends.
	transport *http.Transport
}

// clientFlagEnv lists the shared flags that also read PODID_<FLAG>. Only
// these: a PODID_NAMESPACE left in the environment must not silently
// filter a list or pick what a delete deletes.
var clientFlagEnv = []string{"server", "profile", "region", "server-ca", "output"}

// addClientFlags registers the shared flags on cmd.
func (o *clientOptions) addClientFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "podid server's URL, e.g. https://podid.example:8443; several replicas comma-separated, the first healthy one is used (env PODID_SERVER)")
	f.StringVar(&o.profile, "profile", "", "AWS shared config profile holding the podid access key (default: AWS_PROFILE or the default chain; env PODID_PROFILE)")
	f.StringVar(&o.region, "region", "us-east-1", "region to sign requests for; podid accepts any (env PODID_REGION)")
	f.StringVar(&o.serverCA, "server-ca", "", "PEM CA bundle to verify podid server's certificate (default: system roots; env PODID_SERVER_CA)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml (env PODID_OUTPUT)")
}

// clientRunE wraps a client command: it fills the shared flags from the
// environment, checks them and maps whatever run returns to an error with
// an exit code and a hint.
func (o *clientOptions) clientRunE(run func(ctx context.Context, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		for _, name := range clientFlagEnv {
			f := cmd.Flags().Lookup(name)
			if f == nil || f.Changed {
				continue
			}
			env := "PODID_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			if v, ok := os.LookupEnv(env); ok && v != "" {
				if err := f.Value.Set(v); err != nil {
					return usageErrorf("environment %s: %v", env, err)
				}
			}
		}
		switch o.output {
		case "table", "json", "yaml":
		default:
			return usageErrorf("-o %q: use table, json or yaml", o.output)
		}
		defer func() {
			// Connections a parallel request dialed but never used would
			// otherwise hold up a server's graceful shutdown (tests run
			// many commands in one process).
			if o.transport != nil {
				o.transport.CloseIdleConnections()
			}
		}()
		return o.explainError(run(cmd.Context(), cmd))
	}
}

// podidClient holds the two clients a command may need: the real AWS SDK
// EKS client for associations, and api.Client for podid's admin API.
type podidClient struct {
	eks   *eks.Client
	admin *api.Client
}

// connect builds the clients. It resolves the credentials up front so a
// missing key is reported as such and not as a failed request.
func (o *clientOptions) connect(ctx context.Context) (*podidClient, error) {
	if o.server == "" {
		return nil, usageErrorf("--server is required (or set PODID_SERVER): podid server's URL, e.g. http://127.0.0.1:8080")
	}
	var servers []string
	for _, sv := range strings.Split(o.server, ",") {
		sv = strings.TrimSpace(sv)
		u, err := url.Parse(sv)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageErrorf("--server %q is not an http:// or https:// URL", sv)
		}
		servers = append(servers, strings.TrimRight(sv, "/"))
	}
	o.server = servers[0]
	opts := []func(*config.LoadOptions) error{config.WithRegion(o.region)}
	if o.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.profile))
	}
	if o.credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.credentials))
	}
	var tlsConfig *tls.Config
	if o.serverCA != "" {
		pemData, err := os.ReadFile(o.serverCA)
		if err != nil {
			return nil, usageErrorf("--server-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, usageErrorf("--server-ca %s holds no PEM certificate", o.serverCA)
		}
		tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("loading the AWS configuration: %w", err),
			hint: "check --profile / AWS_PROFILE and the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE point to"}
	}
	// The SDK only sets an HTTP client of its own for AWS_CA_BUNDLE; keep
	// that one unless --server-ca says otherwise. Set after loading, since
	// config.WithHTTPClient rejects a plain client when AWS_CA_BUNDLE is set.
	if cfg.HTTPClient == nil || tlsConfig != nil {
		o.transport = http.DefaultTransport.(*http.Transport).Clone()
		o.transport.TLSClientConfig = tlsConfig
		cfg.HTTPClient = &http.Client{Transport: o.transport, Timeout: 60 * time.Second}
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, &exitError{code: exitDenied, err: fmt.Errorf("no credentials to sign with: %w", err),
			hint: "put a podid access key (from the server's keys file) in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or in an AWS profile and pass --profile"}
	}
	if len(servers) > 1 {
		o.server = pickServer(ctx, asHTTPClient(cfg.HTTPClient), servers)
	}
	server := o.server
	return &podidClient{
		eks: eks.NewFromConfig(cfg, func(eo *eks.Options) { eo.BaseEndpoint = aws.String(server) }),
		// The admin client goes through the SDK's HTTP client, so
		// --server-ca, AWS_CA_BUNDLE and proxies apply to both the same way.
		admin: &api.Client{Endpoint: server, Credentials: cfg.Credentials, Region: o.region, HTTPClient: asHTTPClient(cfg.HTTPClient)},
	}, nil
}

// pickServer returns the first of several replicas that answers /healthz,
// so a command fails over past a replica that is down; with none healthy
// it returns the first, whose error then says what is wrong.
func pickServer(ctx context.Context, hc *http.Client, servers []string) string {
	for _, sv := range servers {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, err := http.NewRequestWithContext(pctx, http.MethodGet, sv+"/healthz", nil)
		if err == nil {
			var resp *http.Response
			if resp, err = hc.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					cancel()
					return sv
				}
			}
		}
		cancel()
	}
	return servers[0]
}

func asHTTPClient(c aws.HTTPClient) *http.Client {
	if hc, ok := c.(*http.Client); ok {
		return hc
	}
	return &http.Client{Transport: doerTransport{c}}
}

// doerTransport adapts the SDK's HTTP client to an http.RoundTripper.
type doerTransport struct{ c aws.HTTPClient }

func (t doerTransport) RoundTrip(r *http.Request) (*http.Response, error) { return t.c.Do(r) }

// errorTypeExit maps the AWS error names podid server sends to exit codes.
func errorTypeExit(typ string) int {
	switch typ {
	case "ResourceNotFoundException", "NotFoundException":
		return exitNotFound
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
		"IncompleteSignatureException", "MissingAuthenticationTokenException", "SignatureDoesNotMatch",
		"InvalidClientTokenId":
		return exitDenied
	case "ResourceInUseException", "ConflictException", "ResourceExistsException":
		return exitConflict
	case "ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException", "RequestLimitExceeded":
		return exitUnavailable
	case "InvalidParameterException", "InvalidRequestException", "ValidationException":
		return exitUsage
	}
	return exitServer
}

// errorTypeHint says what to do about an error the server returned.
func (o *clientOptions) errorTypeHint(typ, msg string) string {
	switch typ {
	case "ResourceNotFoundException", "NotFoundException":
		return "check the names: `podid cluster list` shows the clusters, `podid association list --cluster <name>` the associations"
	case "AccessDeniedException":
		switch {
		case strings.Contains(msg, "read-only"):
			return "the key needs admin scope for this command: use an admin key from the server's keys file"
		case strings.Contains(msg, "agent keys"):
			return "agent keys can only exchange pod tokens: use an admin or read-only key"
		}
		return "the key is not allowed to do this; see its scope in the server's keys file"
	case "UnrecognizedClientException":
		return "podid server does not know this access key: use one from its keys file, via AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile"
	case "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignatureException", "MissingAuthenticationTokenException":
		return "the secret access key does not match the access key id, or this machine's clock is more than 5 minutes off"
	case "ResourceInUseException", "ConflictException":
		return "it already exists: `podid association describe` shows it; update or delete it instead"
	case "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded":
		return "podid server is rate limiting; retry in a moment"
	case "ServiceUnavailableException":
		return "podid server or its store is unavailable; retry later"
	case "UnknownOperationException":
		return fmt.Sprintf("is %s a podid server of a version that has this operation?", o.server)
	}
	return ""
}

// explainError turns a client-side or server error into an *exitError
// whose message says what went wrong and what to do.
func (o *clientOptions) explainError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	var typ, msg string
	var ae *api.APIError
	var se smithy.APIError
	switch {
	case errors.As(err, &ae):
		typ, msg = ae.Type, ae.Message
	case errors.As(err, &se):
		typ, msg = se.ErrorCode(), se.ErrorMessage()
	}
	if typ != "" {
		// Signature errors arrive with the type repeated in the message.
		msg = strings.TrimPrefix(msg, typ+": ")
		return &exitError{code: errorTypeExit(typ), err: fmt.Errorf("%s: %s", typ, msg), hint: o.errorTypeHint(typ, msg)}
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitUsage, err: errors.New("interrupted")}
	}
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce *tls.CertificateVerificationError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &uae), errors.As(err, &he), errors.As(err, &ce):
		return &exitError{code: exitServer, err: fmt.Errorf("podid server's certificate is not trusted: %w", rootCause(err)),
			hint: "pass its CA bundle with --server-ca (or PODID_SERVER_CA)"}
	case errors.As(err, &rhe), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return &exitError{code: exitServer, err: errors.New("podid server did not answer TLS"),
			hint: fmt.Sprintf("use http:// instead of https:// in --server %s", o.server)}
	}
	var ne net.Error
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &ne) || isDNSError(err) {
		return &exitError{code: exitUnavailable, err: fmt.Errorf("cannot reach podid server at %s: %w", o.server, rootCause(err)),
			hint: fmt.Sprintf("is podid server running at %s? set --server or PODID_SERVER", o.server)}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return &exitError{code: exitUnavailable, err: err}
	}
	return &exitError{code: exitServer, err: err}
}

func isDNSError(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de)
}

// rootCause is the innermost error, which for network failures is the
// part a person reads ("connection refused") without the SDK's wrapping.
func rootCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op
	}
	return err
}

// render writes v as JSON or YAML, or calls table for people.
func (o *clientOptions) render(w io.Writer, v any, table func(w io.Writer) error) error {
	switch o.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		raw, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(raw)
		return err
	}
	return table(w)
}

// newTable returns a tabwriter for column output; Flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// orDash shows an empty cell as "-", so columns stay readable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
