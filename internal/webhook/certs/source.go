// Package certs provides the webhook's serving certificate, reloaded without
// a restart when it changes. Three sources:
//
//   - Manager: the webhook runs its own CA. It keeps the CA and the serving
//     certificate in a kubernetes.io/tls Secret (with ca.crt and ca.key),
//     makes them when missing, invalid, for other names or close to expiry,
//     and patches the CA bundle into its MutatingWebhookConfiguration.
//     Replicas converge on one certificate through the Secret's
//     resourceVersion.
//   - SecretSource: a Secret someone else maintains (cert-manager), read only;
//     cert-manager's cainjector patches the caBundle.
//   - FileSource: PEM files on disk (a mounted Secret, or static files).
//
// Every source polls: certificates change rarely and a poll every few
// minutes is far ahead of any renewal window, with no watch to keep alive.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/internal/kubeapi"
)

// Source provides the serving certificate for tls.Config.GetCertificate.
type Source interface {
	// GetCertificate returns the current certificate; it fails until one
	// has loaded.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Ready reports whether a certificate has loaded.
	Ready() bool
	// Run keeps the certificate current until ctx ends, then returns nil.
	Run(ctx context.Context) error
}

// DefaultReloadInterval is how often FileSource and SecretSource look for a
// new certificate.
const DefaultReloadInterval = time.Minute

// holder is the certificate currently served, swapped atomically.
type holder struct {
	cur atomic.Pointer[loaded]
}

type loaded struct {
	cert    *tls.Certificate
	certPEM []byte
}

func (h *holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	l := h.cur.Load()
	if l == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return l.cert, nil
}

func (h *holder) Ready() bool { return h.cur.Load() != nil }

// install parses the pair and serves it; it reports whether the certificate
// changed.
func (h *holder) install(certPEM, keyPEM []byte) (bool, error) {
	if l := h.cur.Load(); l != nil && bytes.Equal(l.certPEM, certPEM) {
		return false, nil
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, err
	}
	h.cur.Store(&loaded{cert: &c, certPEM: bytes.Clone(certPEM)})
	return true, nil
}

// poll runs load now and every interval until ctx ends. Failures are logged
// and retried with backoff from 1s up to interval.
func poll(ctx context.Context, log *slog.Logger, what string, interval time.Duration, ready func() bool, sleep func(context.Context, time.Duration) error, load func(context.Context) error) error {
	failures := 0
	for {
		err := load(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := interval
		if err != nil {
			// Retry sooner than interval even when a certificate is
			// loaded: the failure may be a caBundle patch, and until it
			// lands the API server cannot call the webhook.
			failures++
			wait = min(time.Second<<min(failures-1, 10), interval)
			level := slog.LevelWarn
			if !ready() {
				level = slog.LevelError
			}
			log.LogAttrs(ctx, level, "serving certificate: "+what+" failed", slog.String("error", err.Error()), slog.Int("failures", failures))
		} else {
			failures = 0
		}
		if sleep(ctx, wait) != nil {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// FileSource serves a certificate and key from PEM files, re-read every
// interval, so a renewed mounted Secret is picked up without a restart.
type FileSource struct {
	holder
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger
}

// NewFileSource loads certFile and keyFile once, so a bad path fails at
// start, and returns a source that reloads them every interval (default
// DefaultReloadInterval) while Run runs. log may be nil.
func NewFileSource(certFile, keyFile string, interval time.Duration, log *slog.Logger) (*FileSource, error) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &FileSource{certFile: certFile, keyFile: keyFile, interval: interval, log: log}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files now.
func (s *FileSource) Reload() error {
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	changed, err := s.install(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("serving certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	if changed {
		s.log.Info("loaded serving certificate", "certFile", s.certFile)
	}
	return nil
}

// Run implements Source.
func (s *FileSource) Run(ctx context.Context) error {
	if sleep(ctx, s.interval) != nil {
		return nil
	}
	return poll(ctx, s.log, "reloading files", s.interval, s.Ready, sleep, func(context.Context) error { return s.Reload() })
}

// SecretSource serves the tls.crt and tls.key of a Secret maintained by
// someone else (cert-manager). It only reads the Secret.
type SecretSource struct {
	holder
	client          kubernetes.Interface
	namespace, name string
	interval        time.Duration
	log             *slog.Logger
}

// NewSecretSource returns a source for Secret namespace/name; Run loads it
// and reloads it every interval (default DefaultReloadInterval). log may be
// nil.
func NewSecretSource(client kubernetes.Interface, namespace, name string, interval time.Duration, log *slog.Logger) *SecretSource {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SecretSource{client: client, namespace: namespace, name: name, interval: interval, log: log}
}

// Reload reads the Secret now.
func (s *SecretSource) Reload(ctx context.Context) error {
	what := fmt.Sprintf("reading TLS Secret %s/%s", s.namespace, s.name)
	sec, err := s.client.CoreV1().Secrets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		err = kubeapi.Explain(err, what, fmt.Sprintf(`"get" on secrets in namespace %s`, s.namespace))
		return fmt.Errorf("%w (is the cert-manager Certificate ready?)", err)
	}
	changed, err := s.install(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return fmt.Errorf("%s: tls.crt and tls.key: %w", what, err)
	}
	if changed {
		s.log.Info("loaded serving certificate", "secret", s.namespace+"/"+s.name)
	}
	return nil
}

// Run implements Source.
func (s *SecretSource) Run(ctx context.Context) error {
	return poll(ctx, s.log, "reading the TLS Secret", s.interval, s.Ready, sleep, s.Reload)
}
