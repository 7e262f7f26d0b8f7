package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/internal/kubeapi"
)

// Keys of the managed Secret besides tls.crt and tls.key.
const (
	// KeyCACert is the CA bundle the API server must trust: the current
	// CA first, then the previous one during a CA rotation.
	KeyCACert = "ca.crt"
	// KeyCAKey is the current CA's private key, kept so a serving
	// certificate can be renewed without changing the caBundle.
	KeyCAKey = "ca.key"
)

// Defaults of ManagerConfig.
const (
	DefaultCAValidity    = 10 * 365 * 24 * time.Hour
	DefaultCertValidity  = 365 * 24 * time.Hour
	DefaultRenewFraction = 1.0 / 3
	DefaultCheckInterval = 10 * time.Minute
	// ManagedByLabel marks the Secret as podid's.
	ManagedByLabel = "app.kubernetes.io/managed-by"
)

// maxAttempts bounds the read-modify-write rounds of one Ensure when other
// replicas keep winning.
const maxAttempts = 5

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Client reads and writes the Secret and the webhook configuration.
	Client kubernetes.Interface
	// Namespace and SecretName locate the Secret; required.
	Namespace  string
	SecretName string
	// DNSNames and IPs the serving certificate must cover; at least one.
	// ServiceDNSNames gives the names of a Service.
	DNSNames []string
	IPs      []net.IP
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks
	// get the CA bundle; "" patches nothing.
	WebhookConfigName string
	// CAValidity and CertValidity are the lifetimes of new certificates;
	// default DefaultCAValidity and DefaultCertValidity.
	CAValidity   time.Duration
	CertValidity time.Duration
	// RenewFraction: a certificate is replaced when less than this
	// fraction of its lifetime is left; in (0, 1), default 1/3.
	RenewFraction float64
	// CheckInterval between two looks at the Secret in Run; default
	// DefaultCheckInterval.
	CheckInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Sleep waits for d or until ctx ends; tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// ServiceDNSNames are the names the API server may use for a Service:
// name, name.namespace, name.namespace.svc and the cluster.local form.
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		service,
		service + "." + namespace,
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
	}
}

// Manager runs the webhook's own CA; see the package documentation.
type Manager struct {
	holder
	cfg ManagerConfig
}

// NewManager checks cfg and returns a Manager with nothing loaded; call
// Ensure or Run.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("certs: Client is required")
	case cfg.Namespace == "" || cfg.SecretName == "":
		return nil, errors.New("certs: Namespace and SecretName are required")
	case len(cfg.DNSNames) == 0 && len(cfg.IPs) == 0:
		return nil, errors.New("certs: the serving certificate needs a DNS name or an IP address")
	case cfg.RenewFraction < 0 || cfg.RenewFraction >= 1:
		return nil, fmt.Errorf("certs: renew fraction %v is not in (0, 1)", cfg.RenewFraction)
	case cfg.CAValidity < 0 || cfg.CertValidity < 0:
		return nil, errors.New("certs: validities must be positive")
	}
	if cfg.CAValidity == 0 {
		cfg.CAValidity = DefaultCAValidity
	}
	if cfg.CertValidity == 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	if cfg.RenewFraction == 0 {
		cfg.RenewFraction = DefaultRenewFraction
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg}, nil
}

// Run ensures the certificate now and every CheckInterval until ctx ends,
// and returns nil then; before the first success it retries sooner.
func (m *Manager) Run(ctx context.Context) error {
	return poll(ctx, m.cfg.Logger, "managing the CA and serving certificate", m.cfg.CheckInterval, m.Ready, m.cfg.Sleep, m.Ensure)
}

// bundle is the parsed content of the Secret.
type bundle struct {
	certPEM, keyPEM []byte
	caPEM           []byte // the ca.crt bundle
	ca              *CA    // nil when the CA part is unusable
	leaf            *x509.Certificate
	prevCAs         []*x509.Certificate // the bundle's other CAs
}

// Ensure makes the Secret hold a valid CA and serving certificate (reusing
// what is there when it is good), patches the CA bundle into the webhook
// configuration, and serves the certificate. When another replica writes
// the Secret first, Ensure adopts what it wrote.
func (m *Manager) Ensure(ctx context.Context) error {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	ref := m.cfg.Namespace + "/" + m.cfg.SecretName
	for range maxAttempts {
		sec, err := secrets.Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return kubeapi.Explain(err, "reading Secret "+ref, m.secretPermission())
		}
		if exists {
			if err := m.checkOwnable(sec); err != nil {
				return err
			}
		}
		now := m.cfg.Now()
		var b *bundle
		problem := "the Secret does not exist"
		if exists {
			b, problem = m.inspect(sec, now)
		}
		if problem == "" {
			return m.use(ctx, b)
		}

		nb, err := m.generate(b, now)
		if err != nil {
			return err
		}
		if exists {
			sec = sec.DeepCopy()
			sec.Data = nb.data()
			_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		} else {
			_, err = secrets.Create(ctx, m.newSecret(nb), metav1.CreateOptions{})
		}
		switch {
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// Another replica wrote first; what it wrote is as good.
			m.cfg.Logger.DebugContext(ctx, "another writer updated the serving certificate Secret first; re-reading", "secret", ref)
			continue
		case err != nil:
			return kubeapi.Explain(err, "writing Secret "+ref, m.secretPermission())
		}
		m.cfg.Logger.InfoContext(ctx, "generated serving certificate", "secret", ref, "reason", problem,
			"newCA", b == nil || b.ca == nil, "notAfter", nb.leaf.NotAfter)
		return m.use(ctx, nb)
	}
	return fmt.Errorf("the Secret %s kept changing under us after %d attempts; will retry", ref, maxAttempts)
}

func (m *Manager) secretPermission() string {
	return fmt.Sprintf(`"get", "create" and "update" on secrets in namespace %s`, m.cfg.Namespace)
}

// checkOwnable refuses Secrets that are not ours to rewrite.
func (m *Manager) checkOwnable(sec *corev1.Secret) error {
	ref := m.cfg.Namespace + "/" + m.cfg.SecretName
	if sec.Type != corev1.SecretTypeTLS {
		return fmt.Errorf("the Secret %s has type %q, not %q: delete it or choose another --secret-name", ref, sec.Type, corev1.SecretTypeTLS)
	}
	for k := range sec.Annotations {
		if strings.HasPrefix(k, "cert-manager.io/") {
			return fmt.Errorf("the Secret %s is maintained by cert-manager: use --tls-secret to serve it instead of managing a CA", ref)
		}
	}
	return nil
}

// inspect parses the Secret and says why it cannot be used as is ("" when
// it can). The returned bundle keeps whatever parsed, so a good CA is
// reused when only the serving certificate is stale.
func (m *Manager) inspect(sec *corev1.Secret, now time.Time) (*bundle, string) {
	b := &bundle{certPEM: sec.Data[corev1.TLSCertKey], keyPEM: sec.Data[corev1.TLSPrivateKeyKey], caPEM: sec.Data[KeyCACert]}
	cas, err := parseCerts(b.caPEM)
	if err != nil {
		return b, "ca.crt: " + err.Error()
	}
	b.prevCAs = cas[1:]
	ca, err := ParseCA(pemOf(cas[0]), sec.Data[KeyCAKey])
	if err != nil {
		return b, err.Error()
	}
	if now.After(ca.Cert.NotAfter) || renewalDue(ca.Cert, now, m.cfg.RenewFraction) {
		// b.ca stays nil: a new CA is due.
		return b, fmt.Sprintf("the CA expires at %s", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	b.ca = ca
	pair, err := tlsPair(b.certPEM, b.keyPEM)
	if err != nil {
		return b, "tls.crt/tls.key: " + err.Error()
	}
	b.leaf = pair
	if _, err := pair.Verify(x509.VerifyOptions{Roots: poolOf(ca.Cert), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return b, "the serving certificate does not verify against the CA: " + err.Error()
	}
	for _, name := range m.cfg.DNSNames {
		if pair.VerifyHostname(name) != nil {
			return b, "the serving certificate does not cover " + name
		}
	}
	for _, ip := range m.cfg.IPs {
		if !slices.ContainsFunc(pair.IPAddresses, ip.Equal) {
			return b, "the serving certificate does not cover " + ip.String()
		}
	}
	if renewalDue(pair, now, m.cfg.RenewFraction) {
		return b, fmt.Sprintf("the serving certificate expires at %s", pair.NotAfter.Format(time.RFC3339))
	}
	return b, ""
}

// generate makes a new serving certificate, and a new CA unless old has a
// usable one. During a CA rotation the old CA stays in the bundle, so
// replicas still serving a certificate it signed remain trusted until they
// reload.
func (m *Manager) generate(old *bundle, now time.Time) (*bundle, error) {
	nb := &bundle{}
	if old != nil && old.ca != nil {
		nb.ca = old.ca
		nb.caPEM = old.ca.CertPEM
	} else {
		ca, err := NewCA("podid-webhook-ca", now, m.cfg.CAValidity)
		if err != nil {
			return nil, err
		}
		nb.ca = ca
		nb.caPEM = bytes.Clone(ca.CertPEM)
		if old != nil {
			if cas, err := parseCerts(old.caPEM); err == nil && now.Before(cas[0].NotAfter) && cas[0].IsCA {
				nb.prevCAs = cas[:1]
				nb.caPEM = append(nb.caPEM, pemOf(cas[0])...)
			}
		}
	}
	var err error
	nb.certPEM, nb.keyPEM, err = nb.ca.Issue(m.cfg.DNSNames, m.cfg.IPs, now, m.cfg.CertValidity)
	if err != nil {
		return nil, err
	}
	if nb.leaf, err = tlsPair(nb.certPEM, nb.keyPEM); err != nil {
		return nil, err
	}
	return nb, nil
}

func (b *bundle) data() map[string][]byte {
	return map[string][]byte{
		corev1.TLSCertKey:       b.certPEM,
		corev1.TLSPrivateKeyKey: b.keyPEM,
		KeyCACert:               b.caPEM,
		KeyCAKey:                b.ca.KeyPEM,
	}
}

func (m *Manager) newSecret(b *bundle) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      m.cfg.SecretName,
			Namespace: m.cfg.Namespace,
			Labels:    map[string]string{ManagedByLabel: "podid"},
		},
		Type: corev1.SecretTypeTLS,
		Data: b.data(),
	}
}

// use patches the CA bundle and then serves the certificate. The patch
// comes first so the API server trusts a new CA before anyone serves a
// certificate it signed; the certificate is served even when the patch
// fails, since other replicas load it from the Secret anyway.
func (m *Manager) use(ctx context.Context, b *bundle) error {
	patchErr := m.patchCABundle(ctx, b.caPEM)
	changed, err := m.install(b.certPEM, b.keyPEM)
	if err != nil {
		return fmt.Errorf("loading the serving certificate: %w", err)
	}
	if changed {
		m.cfg.Logger.InfoContext(ctx, "serving certificate loaded", "secret", m.cfg.Namespace+"/"+m.cfg.SecretName,
			"dnsNames", b.leaf.DNSNames, "notAfter", b.leaf.NotAfter)
	}
	return patchErr
}

// patchCABundle sets caBundle on every webhook of the configuration, with
// optimistic concurrency.
func (m *Manager) patchCABundle(ctx context.Context, caPEM []byte) error {
	if m.cfg.WebhookConfigName == "" {
		return nil
	}
	name := m.cfg.WebhookConfigName
	configs := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	perm := fmt.Sprintf(`"get" and "update" on mutatingwebhookconfigurations named %s`, name)
	for range maxAttempts {
		wc, err := configs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the MutatingWebhookConfiguration %s was not found: apply the webhook manifest or set --webhook-config-name; the CA bundle is patched once it exists", name)
		}
		if err != nil {
			return kubeapi.Explain(err, "reading MutatingWebhookConfiguration "+name, perm)
		}
		wc = wc.DeepCopy()
		changed := false
		for i := range wc.Webhooks {
			if !bytes.Equal(wc.Webhooks[i].ClientConfig.CABundle, caPEM) {
				wc.Webhooks[i].ClientConfig.CABundle = bytes.Clone(caPEM)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = configs.Update(ctx, wc, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return kubeapi.Explain(err, "patching the caBundle of MutatingWebhookConfiguration "+name, perm)
		}
		m.cfg.Logger.InfoContext(ctx, "patched caBundle", "mutatingWebhookConfiguration", name, "webhooks", len(wc.Webhooks))
		return nil
	}
	return fmt.Errorf("the MutatingWebhookConfiguration %s kept changing under us after %d attempts; will retry", name, maxAttempts)
}

// tlsPair checks that the key matches the certificate and returns the
// parsed leaf.
func tlsPair(certPEM, keyPEM []byte) (*x509.Certificate, error) {
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}
