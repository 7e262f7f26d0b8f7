package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/identity"
)

// Bounds kube-apiserver puts on a TokenRequest's expirationSeconds.
const (
	minTTL = 10 * time.Minute
	maxTTL = (1<<32 - 1) * time.Second
)

type tokenOptions struct {
	dir            string
	issuer         string
	namespace      string
	serviceAccount string
	pod            string
	node           string
	ttl            time.Duration
	alg            string
	podUID         string
	nodeUID        string
	saUID          string
}

func newTokenCmd(d deps) *cobra.Command {
	o := &tokenOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a pod's projected service-account token for audience " + identity.Audience,
		Long: `Mint a token shaped exactly like the projected service-account token
kube-apiserver gives a pod for audience ` + identity.Audience + `, and print it.

--dir keeps the signing key (signing-key.pem, reused on later runs; a
kube-apiserver key from --service-account-signing-key-file works too) and
jwks.json, the public keys as kube-apiserver serves them at /openid/v1/jwks.
Register the cluster with podid using that JWKS and the same --issuer.`,
		Example: `  podid-dev token --dir ./dev-cluster --issuer https://dev.podid.test \
    --namespace shop --service-account checkout --pod checkout-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := runToken(d, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory for the signing key and jwks.json (created 0700) (required)")
	f.StringVar(&o.issuer, "issuer", "", "issuer URL, as kube-apiserver's --service-account-issuer (required)")
	f.StringVar(&o.namespace, "namespace", "", "pod's namespace (required)")
	f.StringVar(&o.serviceAccount, "service-account", "", "pod's service account (required)")
	f.StringVar(&o.pod, "pod", "", "pod name (required)")
	f.StringVar(&o.node, "node", "node-1", "name of the node the pod runs on")
	f.DurationVar(&o.ttl, "ttl", 24*time.Hour, "token lifetime, whole seconds from 10m up (EKS Pod Identity asks for 24h)")
	f.StringVar(&o.alg, "alg", "", "RS256 or ES256 for a new key (default RS256; an existing key keeps its own)")
	f.StringVar(&o.podUID, "pod-uid", "", "pod UID (default random)")
	f.StringVar(&o.nodeUID, "node-uid", "", "node UID (default random)")
	f.StringVar(&o.saUID, "service-account-uid", "", "service account UID (default random)")
	return cmd
}

// tokenClaims is the payload kube-apiserver writes, fields in its order
// (go-jose merges the claims into a map, so they come out sorted).
type tokenClaims struct {
	Aud        []string   `json:"aud"`
	Exp        int64      `json:"exp"`
	Iat        int64      `json:"iat"`
	Iss        string     `json:"iss"`
	Jti        string     `json:"jti"`
	Kubernetes kubeClaims `json:"kubernetes.io"`
	Nbf        int64      `json:"nbf"`
	Sub        string     `json:"sub"`
}

type kubeClaims struct {
	Namespace      string `json:"namespace"`
	Node           ref    `json:"node"`
	Pod            ref    `json:"pod"`
	ServiceAccount ref    `json:"serviceaccount"`
}

type ref struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

func runToken(d deps, o *tokenOptions, errOut io.Writer) (string, error) {
	if err := o.validate(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return "", fmt.Errorf("creating --dir: %w", err)
	}
	key, created, err := loadOrCreateKey(o.dir, o.alg)
	if err != nil {
		return "", err
	}
	jwks, err := marshalJWKS(key.key.Public())
	if err != nil {
		return "", err
	}
	jwksPath := filepath.Join(o.dir, jwksFile)
	if err := writeFileAtomic(jwksPath, jwks, 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", jwksPath, err)
	}
	if created {
		fmt.Fprintf(errOut, "podid-dev: new %s signing key %s (kid %s)\n", key.alg, filepath.Join(o.dir, signingKeyFile), key.kid)
	}

	uid := func(s string) string {
		if s != "" {
			return strings.ToLower(s)
		}
		return d.newUUID()
	}
	now := d.now().Unix()
	claims := tokenClaims{
		Aud: []string{identity.Audience},
		Exp: now + int64(o.ttl/time.Second),
		Iat: now,
		Iss: o.issuer,
		Jti: d.newUUID(),
		Kubernetes: kubeClaims{
			Namespace:      o.namespace,
			Node:           ref{Name: o.node, UID: uid(o.nodeUID)},
			Pod:            ref{Name: o.pod, UID: uid(o.podUID)},
			ServiceAccount: ref{Name: o.serviceAccount, UID: uid(o.saUID)},
		},
		Nbf: now,
		Sub: "system:serviceaccount:" + o.namespace + ":" + o.serviceAccount,
	}
	return signJWT(key, claims)
}

func signJWT(key *signingKey, claims any) (string, error) {
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{key.alg, key.kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(header) + "." + b64(payload)
	sig, err := key.sign(input)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return input + "." + b64(sig), nil
}

func (o *tokenOptions) validate() error {
	var errs []error
	for _, r := range []struct{ flag, value string }{
		{"dir", o.dir}, {"issuer", o.issuer}, {"namespace", o.namespace},
		{"service-account", o.serviceAccount}, {"pod", o.pod}, {"node", o.node},
	} {
		if r.value == "" {
			errs = append(errs, fmt.Errorf("--%s is required", r.flag))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := validateIssuer(o.issuer); err != nil {
		errs = append(errs, err)
	}
	// The same rules kube-apiserver applies to these objects' names.
	errs = append(errs,
		checkName("namespace", o.namespace, isDNS1123Label),
		checkName("service-account", o.serviceAccount, isDNS1123Subdomain),
		checkName("pod", o.pod, isDNS1123Subdomain),
		checkName("node", o.node, isDNS1123Subdomain),
		checkUID("pod-uid", o.podUID),
		checkUID("node-uid", o.nodeUID),
		checkUID("service-account-uid", o.saUID),
	)
	switch {
	case o.ttl < minTTL:
		errs = append(errs, fmt.Errorf("invalid --ttl %s: must be at least %s, as kube-apiserver requires", o.ttl, minTTL))
	case o.ttl > maxTTL:
		errs = append(errs, fmt.Errorf("invalid --ttl %s: must be less than 2^32 seconds", o.ttl))
	case o.ttl%time.Second != 0:
		errs = append(errs, fmt.Errorf("invalid --ttl %s: must be whole seconds", o.ttl))
	}
	switch o.alg {
	case "", algRS256, algES256:
	default:
		errs = append(errs, fmt.Errorf("invalid --alg %q: use RS256 or ES256", o.alg))
	}
	return errors.Join(errs...)
}

// validateIssuer requires what OIDC discovery requires of an issuer, which
// is what podid's keys-from-Kubernetes mode and real clusters use.
func validateIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#") {
		return fmt.Errorf("invalid --issuer %q: must be an https URL without user, query or fragment, e.g. https://dev.podid.test", s)
	}
	if len(s) > 1024 {
		return fmt.Errorf("invalid --issuer: at most 1024 characters")
	}
	return nil
}

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Sub   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	uuidRE       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// isDNS1123Label and isDNS1123Subdomain return Kubernetes' own messages
// (k8s.io/apimachinery/pkg/util/validation), or "" for a valid name.
func isDNS1123Label(s string) string {
	if len(s) > 63 {
		return "must be no more than 63 characters"
	}
	if !dns1123Label.MatchString(s) {
		return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
	}
	return ""
}

func isDNS1123Subdomain(s string) string {
	if len(s) > 253 {
		return "must be no more than 253 characters"
	}
	if !dns1123Sub.MatchString(s) {
		return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
	}
	return ""
}

func checkName(flag, v string, rule func(string) string) error {
	if msg := rule(v); msg != "" {
		return fmt.Errorf("invalid --%s %q: %s", flag, v, msg)
	}
	return nil
}

func checkUID(flag, v string) error {
	if v != "" && !uuidRE.MatchString(v) {
		return fmt.Errorf("invalid --%s %q: must be a UUID like 117657c3-b52a-4b32-9edc-c292f5ca4219", flag, v)
	}
	return nil
}
