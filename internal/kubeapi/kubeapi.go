// Package kubeapi is podid's access to a cluster's API server: loading a
// kubeconfig (or the in-cluster configuration), reading the service-account
// issuer discovery documents through the API server, minting a
// ServiceAccount token with the TokenRequest API, and turning API errors into
// messages that say which permission is missing.
//
// Discovery goes through the API server rather than the issuer URL, so
// clusters whose issuer is private (https://kubernetes.default.svc...) work
// the same as public ones, with the kubeconfig's own credentials.
package kubeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Paths of service-account issuer discovery on the API server.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/openid/v1/jwks"
)

// DiscoveryClusterRole is the built-in ClusterRole that may get both
// discovery paths; by default it is bound to system:serviceaccounts only.
const DiscoveryClusterRole = "system:service-account-issuer-discovery"

// maxDocumentSize bounds a discovery document or JWKS read from the API
// server; real ones are a few KiB.
const maxDocumentSize = 1 << 20

// Load returns the REST configuration for kubeconfig (a path; "" means the
// in-cluster configuration when running in a pod, else $KUBECONFIG or
// ~/.kube/config) and kubeContext ("" means the current context).
func Load(kubeconfig, kubeContext string) (*rest.Config, error) {
	if kubeconfig == "" && kubeContext == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster Kubernetes configuration: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		where := kubeconfig
		if where == "" {
			where = "$KUBECONFIG or ~/.kube/config (not running in a pod)"
		}
		return nil, fmt.Errorf("loading kubeconfig %s: %w", where, err)
	}
	return cfg, nil
}

// CAPEM returns the PEM CA bundle the configuration trusts for the API
// server, or nil when it relies on the system roots.
func CAPEM(cfg *rest.Config) ([]byte, error) {
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the API server's CA file: %w", err)
		}
		return b, nil
	}
	return nil, nil
}

// Discovery is what an API server tells about its service-account issuer.
type Discovery struct {
	// Issuer is the iss claim of the cluster's service-account tokens.
	Issuer string
	// JWKSURI is where the discovery document says the keys are; for a
	// private issuer it is not reachable from outside the cluster, which is
	// why JWKS is read from the API server.
	JWKSURI string
	// JWKS is the API server's /openid/v1/jwks document as served.
	JWKS []byte
	// KeyIDs lists the kid of each key in JWKS.
	KeyIDs []string
}

// Discover reads the issuer from /.well-known/openid-configuration and the
// keys from /openid/v1/jwks, authenticated as cfg's user.
func Discover(ctx context.Context, cfg *rest.Config) (*Discovery, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the API server client: %w", err)
	}
	// A path in the host (an API server behind a proxy prefix) is kept.
	base, err := url.Parse(cfg.Host)
	if err != nil || base.Host == "" {
		// rest.Config allows a bare host:port.
		base, err = url.Parse("https://" + cfg.Host)
		if err != nil {
			return nil, fmt.Errorf("API server address %q is not a URL", cfg.Host)
		}
	}

	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	raw, err := get(ctx, hc, base, DiscoveryPath)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s of %s is not an OpenID discovery document: %w", DiscoveryPath, base.Redacted(), err)
	}
	if doc.Issuer == "" {
		return nil, fmt.Errorf("%s of %s has no issuer", DiscoveryPath, base.Redacted())
	}
	jwks, err := get(ctx, hc, base, JWKSPath)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("%s of %s is not a JWKS document: %w", JWKSPath, base.Redacted(), err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("%s of %s holds no key", JWKSPath, base.Redacted())
	}
	d := &Discovery{Issuer: doc.Issuer, JWKSURI: doc.JWKSURI, JWKS: jwks}
	for _, k := range set.Keys {
		d.KeyIDs = append(d.KeyIDs, k.KeyID)
	}
	return d, nil
}

// get fetches one discovery path and explains the usual failures.
func get(ctx context.Context, hc *http.Client, base *url.URL, path string) ([]byte, error) {
	u := base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s from the API server: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s from the API server: %w", path, err)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("GET %s from the API server: larger than %d bytes", path, maxDocumentSize)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("GET %s: the API server rejected the kubeconfig's credentials (HTTP 401); check the context and that its token or certificate has not expired", path)
	case http.StatusForbidden:
		return nil, fmt.Errorf("GET %s: the API server refused it (HTTP 403): the kubeconfig's user needs the ClusterRole %s, e.g. kubectl create clusterrolebinding podid-issuer-discovery --clusterrole=%s --user=<user> (or --group=<group>)",
			path, DiscoveryClusterRole, DiscoveryClusterRole)
	case http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: the API server does not serve it (HTTP 404): service-account issuer discovery needs Kubernetes 1.21 or later with --service-account-issuer set", path)
	default:
		return nil, fmt.Errorf("GET %s from the API server: HTTP %s: %s", path, resp.Status, snippet(body))
	}
}

// snippet shortens an error body for a message.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// ServiceAccountToken mints a token for the ServiceAccount namespace/name
// with the TokenRequest API, for the API server's own audience, valid for
// about expiration (the API server may shorten it). The token is returned to
// be handed on, never to be printed or logged.
func ServiceAccountToken(ctx context.Context, cs kubernetes.Interface, namespace, name string, expiration time.Duration) (token string, expires time.Time, err error) {
	secs := int64(expiration / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, Explain(err, fmt.Sprintf("creating a token for ServiceAccount %s/%s", namespace, name),
			fmt.Sprintf(`"create" on serviceaccounts/token in namespace %s`, namespace))
	}
	if tr.Status.Token == "" {
		return "", time.Time{}, fmt.Errorf("creating a token for ServiceAccount %s/%s: the API server returned no token", namespace, name)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// Explain wraps an API error from doing what with a hint: for 403 it names
// the permission (e.g. `"get" on secrets in namespace x`) the caller lacks.
func Explain(err error, what, permission string) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: forbidden: the caller needs RBAC %s: %w", what, permission, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server rejected the credentials: %w", what, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: not found: %w", what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}
