//go:build linux

package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// IssuerDomain is the domain under which each cluster's service-account
// issuer is named: https://<cluster>.e2e.podid.test. Nothing resolves it;
// podid must read the issuer and keys through the API server, as it does for
// clusters with a private issuer.
const IssuerDomain = "e2e.podid.test"

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	// Name is a DNS label naming the cluster; it is also the podid cluster
	// name the tests register.
	Name string
	// Etcd stores the cluster's objects under /podid-e2e/<Name>.
	Etcd *Etcd
	// ExtraArgs are appended to kube-apiserver's arguments.
	ExtraArgs []string
}

// Cluster is a running kube-apiserver with an admin client. There is no
// controller manager, scheduler or kubelet: pods stay Pending and namespaces
// are never finalized, which the tests do not need.
type Cluster struct {
	Name string
	// Issuer is the service-account token issuer.
	Issuer string
	// URL is the API server's base URL, https://127.0.0.1:<port>.
	URL string
	// CACertPEM verifies the API server's serving certificate (and signed
	// the admin client certificate).
	CACertPEM []byte
	// Kubeconfig is a kubeconfig file for the admin user.
	Kubeconfig string
	// REST and Client act as the admin user (group system:masters).
	REST   *rest.Config
	Client kubernetes.Interface
	// Dir holds the certificates, keys and the API server log.
	Dir     string
	Process *Process
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$`)

// StartCluster starts kube-apiserver on loopback against opts.Etcd, waits
// for /readyz and writes a kubeconfig. tb.Cleanup stops it.
//
// Authentication is a client certificate (the admin is in system:masters)
// and authorization is RBAC, as in real clusters, so anything the tests
// create with narrower rights is checked for real.
func StartCluster(ctx context.Context, tb TB, opts ClusterOptions) (*Cluster, error) {
	if !labelRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("cluster name %q is not a short DNS label", opts.Name)
	}
	if opts.Etcd == nil {
		return nil, errors.New("ClusterOptions.Etcd is required")
	}
	bin, err := KubeAPIServerBinary(tb)
	if err != nil {
		return nil, err
	}
	dir, err := TempDir(tb, "podid-e2e-"+opts.Name+"-*")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: opts.Name, Issuer: "https://" + opts.Name + "." + IssuerDomain, Dir: dir}

	ca, err := NewCA("podid-e2e-" + opts.Name + "-ca")
	if err != nil {
		return nil, err
	}
	c.CACertPEM = ca.CertPEM
	serving, err := ca.Serving("kube-apiserver", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
	if err != nil {
		return nil, err
	}
	admin, err := ca.Client("podid-e2e-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	saPriv, saPub, err := ServiceAccountKeys()
	if err != nil {
		return nil, err
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(f("ca.crt"), ca.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := serving.WriteFiles(f("apiserver.crt"), f("apiserver.key")); err != nil {
		return nil, err
	}
	if err := admin.WriteFiles(f("admin.crt"), f("admin.key")); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f("sa.key"), saPriv, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f("sa.pub"), saPub, 0o600); err != nil {
		return nil, err
	}

	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port := freePort()
		c.URL = "https://127.0.0.1:" + strconv.Itoa(port)
		args := []string{
			"--etcd-servers=" + opts.Etcd.URL,
			"--etcd-prefix=/podid-e2e/" + opts.Name,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + f("certs"),
			"--tls-cert-file=" + f("apiserver.crt"),
			"--tls-private-key-file=" + f("apiserver.key"),
			"--client-ca-file=" + f("ca.crt"),
			"--service-account-issuer=" + c.Issuer,
			"--service-account-key-file=" + f("sa.pub"),
			"--service-account-signing-key-file=" + f("sa.key"),
			"--api-audiences=" + c.Issuer,
			"--authorization-mode=RBAC",
			"--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
			"--service-cluster-ip-range=10.96.0.0/16",
			// The default lease reconciler refuses a loopback advertise
			// address; nothing here needs the kubernetes Service endpoints.
			"--endpoint-reconciler-type=none",
			// Priority and fairness only adds bootstrap work on two cores.
			"--enable-priority-and-fairness=false",
			"--profiling=false",
			"--v=1",
		}
		args = append(args, opts.ExtraArgs...)
		p, err := StartProcess(tb, "kube-apiserver "+opts.Name, f(fmt.Sprintf("kube-apiserver-%d.log", attempt)), os.Environ(), bin, args...)
		if err != nil {
			return nil, err
		}
		c.Process = p
		if err := c.buildClients(admin); err != nil {
			return nil, err
		}
		err = waitFor(p, 3*time.Minute, func() error { return c.ready(ctx) })
		if err == nil {
			return c, c.writeKubeconfig(admin)
		}
		lastErr = err
		p.Stop()
		if !addressInUse(p) {
			break
		}
	}
	return nil, lastErr
}

func (c *Cluster) buildClients(admin Pair) error {
	c.REST = &rest.Config{
		Host:            c.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CACertPEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM},
		QPS:             50,
		Burst:           100,
		Timeout:         30 * time.Second,
	}
	cs, err := kubernetes.NewForConfig(c.REST)
	if err != nil {
		return err
	}
	c.Client = cs
	return nil
}

func (c *Cluster) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("readyz: %v %s", err, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *Cluster) writeKubeconfig(admin Pair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CACertPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: admin.CertPEM, ClientKeyData: admin.KeyPEM}
	cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: "admin"}
	cfg.CurrentContext = c.Name
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// OpenIDConfiguration is the part of the API server's OIDC discovery
// document podid uses.
type OpenIDConfiguration struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// Discovery reads /.well-known/openid-configuration through the API server.
func (c *Cluster) Discovery(ctx context.Context) (*OpenIDConfiguration, error) {
	raw, err := c.Client.Discovery().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: openid-configuration: %w", c.Name, err)
	}
	var oc OpenIDConfiguration
	if err := json.Unmarshal(raw, &oc); err != nil {
		return nil, fmt.Errorf("%s: openid-configuration: %w", c.Name, err)
	}
	return &oc, nil
}

// JWKS reads the service-account signing keys from /openid/v1/jwks.
func (c *Cluster) JWKS(ctx context.Context) ([]byte, error) {
	raw, err := c.Client.Discovery().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: jwks: %w", c.Name, err)
	}
	return raw, nil
}
