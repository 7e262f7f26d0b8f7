package node

import (
	"bytes"
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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// In-cluster defaults: where the kubelet mounts a pod's ServiceAccount.
const (
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// maxAttempts bounds retries on write conflicts. A node object is written
// by the kubelet every few seconds at most, so a handful always suffices
// unless something is badly wrong, and then an error is more useful.
const maxAttempts = 5

// TaintConfig says which taint to remove from which node and how to reach
// the Kubernetes API. Only NodeName and Taint are required in a pod.
type TaintConfig struct {
	// APIServer is the base URL; "" means https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	APIServer string
	// TokenFile holds the bearer token; "" means DefaultTokenFile. It is
	// read on every call because the kubelet rotates projected tokens.
	TokenFile string
	// CAFile verifies the API server; "" means DefaultCAFile. Unused when
	// HTTPClient is set.
	CAFile string
	// NodeName is the node to untaint, usually spec.nodeName via the
	// downward API.
	NodeName string
	// Taint is "key:Effect" or "key=value:Effect", as for kubectl taint.
	Taint string
	// HTTPClient, if set, is used as is (tests, custom transports).
	HTTPClient *http.Client
}

// Taint is a node taint as it appears in a Node's spec.taints.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// String formats t the way ParseTaint reads it.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

// matches follows kubectl: key and effect identify a taint (the API server
// allows only one per pair); a value, if given, must match too.
func (t Taint) matches(o Taint) bool {
	return t.Key == o.Key && t.Effect == o.Effect && (t.Value == "" || t.Value == o.Value)
}

var (
	// Kubernetes qualified-name and label-value rules, checked here so a
	// typo in a flag fails at startup instead of silently never matching.
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	effects     = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}
)

// ParseTaint reads "key:Effect" or "key=value:Effect".
func ParseTaint(s string) (Taint, error) {
	bad := func(why string) (Taint, error) {
		return Taint{}, fmt.Errorf("invalid taint %q: %s (want key:Effect or key=value:Effect, e.g. podid.io/agent-not-ready:NoSchedule)", s, why)
	}
	kv, effect, ok := cut(s, ":")
	if !ok {
		return bad("no :Effect")
	}
	var t Taint
	t.Key, t.Value, _ = strings.Cut(kv, "=")
	t.Effect = effect
	if !slices.Contains(effects, effect) {
		return bad("effect must be one of " + strings.Join(effects, ", "))
	}
	prefix, name, hasPrefix := strings.Cut(t.Key, "/")
	if !hasPrefix {
		prefix, name = "", t.Key
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !subdomainRE.MatchString(prefix)) {
		return bad("key prefix must be a DNS subdomain")
	}
	if len(name) > 63 || !nameRE.MatchString(name) {
		return bad("key must be a qualified name (alphanumerics, '-', '_', '.', at most 63, optional DNS prefix and '/')")
	}
	if t.Value != "" && (len(t.Value) > 63 || !nameRE.MatchString(t.Value)) {
		return bad("value must be at most 63 alphanumerics, '-', '_' or '.'")
	}
	return t, nil
}

// cut splits at the last sep: keys may not contain ':' but this keeps the
// error about the key rather than the effect when they do.
func cut(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// RemoveTaint removes cfg.Taint from node cfg.NodeName, so that the
// scheduler starts placing pods there once the agent can serve them. It is
// idempotent: an absent taint is success. It talks to the API server with a
// few plain HTTP calls instead of client-go to keep the agent binary small.
//
// The removal is a JSON patch that first tests metadata.resourceVersion: a
// bare "remove at index i" could delete another taint if the list changed
// since our read. On a conflict it re-reads and tries again.
func RemoveTaint(ctx context.Context, cfg TaintConfig) error {
	taint, err := ParseTaint(cfg.Taint)
	if err != nil {
		return err
	}
	if cfg.NodeName == "" {
		return errors.New("removing taint: no node name (set it from spec.nodeName with the downward API)")
	}
	c, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	path := "/api/v1/nodes/" + url.PathEscape(cfg.NodeName)
	for attempt := 1; ; attempt++ {
		var node struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
			Spec struct {
				Taints []Taint `json:"taints"`
			} `json:"spec"`
		}
		if err := c.do(ctx, http.MethodGet, path, "", nil, &node); err != nil {
			return fmt.Errorf("getting node %q: %w", cfg.NodeName, err)
		}
		i := -1
		for j, t := range node.Spec.Taints {
			if taint.matches(t) {
				i = j
				break
			}
		}
		if i < 0 {
			return nil
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/resourceVersion", "value": node.Metadata.ResourceVersion},
			{"op": "remove", "path": "/spec/taints/" + strconv.Itoa(i)},
		})
		if err != nil {
			return err
		}
		err = c.do(ctx, http.MethodPatch, path, "application/json-patch+json", patch, nil)
		if err == nil {
			return nil
		}
		// 409: the storage write raced; 422: our test op failed because the
		// node changed between GET and PATCH. Both mean "read again".
		var se *statusError
		if errors.As(err, &se) && (se.Code == http.StatusConflict || se.Code == http.StatusUnprocessableEntity) && attempt < maxAttempts {
			continue
		}
		if se != nil && (se.Code == http.StatusConflict || se.Code == http.StatusUnprocessableEntity) {
			return fmt.Errorf("removing taint %s from node %q: %w (gave up after %d attempts)", taint, cfg.NodeName, err, attempt)
		}
		return fmt.Errorf("removing taint %s from node %q: %w", taint, cfg.NodeName, err)
	}
}

// apiClient is the minimum of a Kubernetes client that RemoveTaint needs.
type apiClient struct {
	base      string
	tokenFile string
	http      *http.Client
}

func newAPIClient(cfg TaintConfig) (*apiClient, error) {
	base := cfg.APIServer
	if base == "" {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return nil, errors.New("no API server: KUBERNETES_SERVICE_HOST/PORT are unset (not in a pod?); set the API server URL")
		}
		base = "https://" + net.JoinHostPort(host, port)
	}
	if u, err := url.Parse(base); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("API server %q is not an http(s) URL", base)
	}
	c := &apiClient{base: strings.TrimSuffix(base, "/"), tokenFile: cfg.TokenFile, http: cfg.HTTPClient}
	if c.tokenFile == "" {
		c.tokenFile = DefaultTokenFile
	}
	if c.http == nil {
		caFile := cfg.CAFile
		if caFile == "" {
			caFile = DefaultCAFile
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading API server CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading API server CA: no PEM certificates in %s", caFile)
		}
		c.http = &http.Client{
			// A hung API server must not hang agent start-up forever even
			// if the caller's context has no deadline.
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				Proxy:           http.ProxyFromEnvironment,
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			},
		}
	}
	return c, nil
}

// statusError is a non-2xx answer; Message comes from the API server's
// Status object so that RBAC denials explain themselves.
type statusError struct {
	Code    int
	Message string
}

func (e *statusError) Error() string {
	s := strconv.Itoa(e.Code) + " " + http.StatusText(e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	switch e.Code {
	case http.StatusUnauthorized:
		s += ": the ServiceAccount token was rejected"
	case http.StatusForbidden:
		s += `: the agent's ServiceAccount needs RBAC verbs "get" and "patch" on "nodes" (ClusterRole rule apiGroups: [""], resources: ["nodes"])`
	case http.StatusNotFound:
		s += ": no such node; the node name should be the pod's spec.nodeName"
	}
	return s
}

func (c *apiClient) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	tok, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return fmt.Errorf("reading ServiceAccount token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var st struct {
			Message string `json:"message"`
		}
		// Best effort: a proxy in front may answer with HTML.
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st)
		return &statusError{Code: resp.StatusCode, Message: st.Message}
	}
	if out == nil {
		return nil
	}
	// Node objects carry image lists and can be large, but not this large.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(out); err != nil {
		return fmt.Errorf("decoding %s %s response: %w", method, path, err)
	}
	return nil
}
