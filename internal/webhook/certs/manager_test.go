package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	testNS      = "podid"
	testSecret  = "podid-webhook-tls"
	testWebhook = "podid-webhook"
	caLife      = 30 * 24 * time.Hour
	certLife    = 9 * 24 * time.Hour
)

var (
	secretsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	start       = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	serviceName = ServiceDNSNames("podid-webhook", testNS)
)

// clock is an injected time source tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// newClient is a fake clientset with the webhook configuration in place and
// the API server's optimistic concurrency, which the fake lacks: every
// write gets a new resourceVersion and an update carrying a stale one fails
// with Conflict.
func newClient(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	wc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testWebhook, ResourceVersion: "1"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "pods.podid.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: testNS, Name: "podid-webhook"}}},
			{Name: "pods-ipv6.podid.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: testNS, Name: "podid-webhook"}}},
		},
	}
	c := fake.NewClientset(append([]runtime.Object{wc}, objs...)...)
	var rv atomic.Int64
	rv.Store(100)
	c.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// CreateAction and UpdateAction are the same interface, so the
		// verb tells them apart.
		w, ok := a.(k8stesting.UpdateAction)
		if !ok {
			return false, nil, nil
		}
		o := w.GetObject().(metav1.Object)
		switch a.GetVerb() {
		case "create":
			o.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
		case "update":
			cur, err := c.Tracker().Get(a.GetResource(), a.GetNamespace(), o.GetName())
			if err != nil {
				return true, nil, err
			}
			if cur.(metav1.Object).GetResourceVersion() != o.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), o.GetName(), errors.New("the object has been modified"))
			}
			o.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
		}
		return false, nil, nil
	})
	return c
}

func newManager(t *testing.T, c *fake.Clientset, clk *clock, mod ...func(*ManagerConfig)) *Manager {
	t.Helper()
	cfg := ManagerConfig{
		Client: c, Namespace: testNS, SecretName: testSecret, DNSNames: serviceName,
		WebhookConfigName: testWebhook, CAValidity: caLife, CertValidity: certLife, Now: clk.Now,
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func getSecret(t *testing.T, c *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := c.CoreV1().Secrets(testNS).Get(context.Background(), testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func caBundles(t *testing.T, c *fake.Clientset) [][]byte {
	t.Helper()
	wc, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), testWebhook, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range wc.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// served is the leaf the manager hands to TLS handshakes.
func served(t *testing.T, s Source) *x509.Certificate {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func mustCerts(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	cs, err := parseCerts(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// checkServing verifies that what is served is what the Secret holds, that
// it verifies for every service name against the Secret's CA at now, and
// that the webhook configuration trusts that CA.
func checkServing(t *testing.T, c *fake.Clientset, m *Manager, now time.Time) {
	t.Helper()
	sec := getSecret(t, c)
	leaf := served(t, m)
	if !bytes.Equal(leaf.Raw, mustCerts(t, sec.Data[corev1.TLSCertKey])[0].Raw) {
		t.Fatal("the served certificate is not the Secret's")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data[KeyCACert]) {
		t.Fatal("ca.crt holds no certificate")
	}
	for _, name := range serviceName {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: now}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for i, b := range caBundles(t, c) {
		if !bytes.Equal(b, sec.Data[KeyCACert]) {
			t.Errorf("webhook %d caBundle differs from ca.crt", i)
		}
	}
	if !m.Ready() {
		t.Error("not ready")
	}
}

func writes(c *fake.Clientset, resource string) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetResource().Resource == resource && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

func TestFreshStartCreatesSecretAndPatchesCABundle(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: start}
	m := newManager(t, c, clk)
	if m.Ready() {
		t.Fatal("ready before Ensure")
	}
	if _, err := m.GetCertificate(nil); err == nil {
		t.Fatal("GetCertificate before Ensure succeeded")
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkServing(t, c, m, start)

	sec := getSecret(t, c)
	if sec.Type != corev1.SecretTypeTLS || sec.Labels[ManagedByLabel] != "podid" {
		t.Errorf("type %q labels %v", sec.Type, sec.Labels)
	}
	ca, err := ParseCA(sec.Data[KeyCACert], sec.Data[KeyCAKey])
	if err != nil {
		t.Fatal(err)
	}
	if ca.Key.Curve != elliptic.P256() {
		t.Errorf("CA curve %v", ca.Key.Curve.Params().Name)
	}
	if got := ca.Cert.NotAfter.Sub(start); got != caLife {
		t.Errorf("CA lifetime %s, want %s", got, caLife)
	}
	leaf := served(t, m)
	if got := leaf.NotAfter.Sub(start); got != certLife {
		t.Errorf("serving certificate lifetime %s, want %s", got, certLife)
	}
	if diff := cmp.Diff(serviceName, leaf.DNSNames); diff != "" {
		t.Errorf("DNS names (-want +got):\n%s", diff)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("serving key is %T", leaf.PublicKey)
	}
}

func TestRestartReusesSecret(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: start}
	if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, c)
	c.ClearActions()

	clk.Set(start.Add(24 * time.Hour))
	m := newManager(t, c, clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := writes(c, "secrets") + writes(c, "mutatingwebhookconfigurations"); n != 0 {
		t.Errorf("restart wrote %d times, want 0", n)
	}
	if !bytes.Equal(served(t, m).Raw, mustCerts(t, before.Data[corev1.TLSCertKey])[0].Raw) {
		t.Error("restart serves another certificate")
	}
	checkServing(t, c, m, clk.Now())
}

func TestRenewal(t *testing.T) {
	tests := []struct {
		name      string
		at        time.Duration // after start
		extraDNS  []string
		extraIP   []net.IP
		wantLeaf  bool // a new serving certificate
		wantCA    bool // a new CA
		wantCAs   int  // certificates in ca.crt
		wantPatch bool
	}{
		{name: "fresh", at: certLife * 6 / 10, wantCAs: 1},
		{name: "serving certificate in its last third", at: certLife * 7 / 10, wantLeaf: true, wantCAs: 1},
		{name: "serving certificate expired", at: certLife + time.Hour, wantLeaf: true, wantCAs: 1},
		{name: "new DNS name", at: time.Hour, extraDNS: []string{"webhook.example.test"}, wantLeaf: true, wantCAs: 1},
		{name: "new IP address", at: time.Hour, extraIP: []net.IP{net.IPv4(10, 0, 0, 7)}, wantLeaf: true, wantCAs: 1},
		{name: "CA in its last third keeps the old CA trusted", at: caLife * 7 / 10, wantLeaf: true, wantCA: true, wantCAs: 2, wantPatch: true},
		{name: "CA expired", at: caLife + time.Hour, wantLeaf: true, wantCA: true, wantCAs: 1, wantPatch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t)
			clk := &clock{t: start}
			if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			before := getSecret(t, c)
			c.ClearActions()

			clk.Set(start.Add(tt.at))
			m := newManager(t, c, clk, func(cfg *ManagerConfig) {
				cfg.DNSNames = append(append([]string(nil), serviceName...), tt.extraDNS...)
				cfg.IPs = tt.extraIP
			})
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			after := getSecret(t, c)
			checkServing(t, c, m, clk.Now())

			if got := !bytes.Equal(before.Data[corev1.TLSCertKey], after.Data[corev1.TLSCertKey]); got != tt.wantLeaf {
				t.Errorf("new serving certificate: %v, want %v", got, tt.wantLeaf)
			}
			if got := !bytes.Equal(before.Data[KeyCAKey], after.Data[KeyCAKey]); got != tt.wantCA {
				t.Errorf("new CA: %v, want %v", got, tt.wantCA)
			}
			cas := mustCerts(t, after.Data[KeyCACert])
			if len(cas) != tt.wantCAs {
				t.Fatalf("ca.crt holds %d certificates, want %d", len(cas), tt.wantCAs)
			}
			if tt.wantCAs == 2 && !bytes.Equal(cas[1].Raw, mustCerts(t, before.Data[KeyCACert])[0].Raw) {
				t.Error("the second CA of the bundle is not the previous CA")
			}
			if got := writes(c, "mutatingwebhookconfigurations") > 0; got != tt.wantPatch {
				t.Errorf("patched caBundle: %v, want %v", got, tt.wantPatch)
			}
			leaf := served(t, m)
			for _, ip := range tt.extraIP {
				if err := leaf.VerifyHostname(ip.String()); err != nil {
					t.Error(err)
				}
			}
			for _, n := range tt.extraDNS {
				if err := leaf.VerifyHostname(n); err != nil {
					t.Error(err)
				}
			}
			if leaf.NotAfter.After(cas[0].NotAfter) {
				t.Errorf("serving certificate outlives its CA: %s > %s", leaf.NotAfter, cas[0].NotAfter)
			}
		})
	}
}

func TestCorruptSecretIsReplaced(t *testing.T) {
	other, err := NewCA("other", start, caLife)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherLeafKey, err := other.Issue(serviceName, nil, start, certLife)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(d map[string][]byte)
		keepCA bool
	}{
		{name: "garbage tls.crt", mutate: func(d map[string][]byte) { d[corev1.TLSCertKey] = []byte("garbage") }, keepCA: true},
		{name: "tls.key of another certificate", mutate: func(d map[string][]byte) { d[corev1.TLSPrivateKeyKey] = otherLeafKey }, keepCA: true},
		{name: "serving certificate of another CA", mutate: func(d map[string][]byte) {
			d[corev1.TLSCertKey], d[corev1.TLSPrivateKeyKey] = otherCert, otherLeafKey
		}, keepCA: true},
		{name: "no ca.key", mutate: func(d map[string][]byte) { delete(d, KeyCAKey) }},
		{name: "ca.key of another CA", mutate: func(d map[string][]byte) { d[KeyCAKey] = other.KeyPEM }},
		{name: "garbage ca.crt", mutate: func(d map[string][]byte) {
			d[KeyCACert] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}},
		{name: "empty", mutate: func(d map[string][]byte) { clear(d) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t)
			clk := &clock{t: start}
			if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			sec := getSecret(t, c)
			tt.mutate(sec.Data)
			if _, err := c.CoreV1().Secrets(testNS).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			corrupt := getSecret(t, c)

			m := newManager(t, c, clk)
			if err := m.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkServing(t, c, m, start)
			after := getSecret(t, c)
			if _, problem := m.inspect(after, start); problem != "" {
				t.Errorf("the replaced Secret is still not usable: %s", problem)
			}
			if got := bytes.Equal(corrupt.Data[KeyCACert], after.Data[KeyCACert]); got != tt.keepCA {
				t.Errorf("kept the CA: %v, want %v", got, tt.keepCA)
			}
		})
	}
}

func TestForeignSecretIsLeftAlone(t *testing.T) {
	tests := []struct {
		name    string
		secret  *corev1.Secret
		wantErr string
	}{
		{name: "opaque", secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS}, Type: corev1.SecretTypeOpaque},
			wantErr: `has type "Opaque", not "kubernetes.io/tls": delete it or choose another --secret-name`},
		{name: "cert-manager", secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS,
			Annotations: map[string]string{"cert-manager.io/certificate-name": "podid-webhook"}}, Type: corev1.SecretTypeTLS},
			wantErr: "maintained by cert-manager: use --tls-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, tt.secret)
			err := newManager(t, c, &clock{t: start}).Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if n := writes(c, "secrets"); n != 0 {
				t.Errorf("wrote the Secret %d times", n)
			}
		})
	}
}

func TestAPIErrorsNameThePermission(t *testing.T) {
	tests := []struct {
		name     string
		verb     string
		resource string
		wantErr  string
		ready    bool
	}{
		{name: "cannot get secrets", verb: "get", resource: "secrets", wantErr: `reading Secret podid/podid-webhook-tls: forbidden: the caller needs RBAC "get", "create" and "update" on secrets in namespace podid`},
		{name: "cannot create secrets", verb: "create", resource: "secrets", wantErr: `writing Secret podid/podid-webhook-tls: forbidden: the caller needs RBAC "get", "create" and "update" on secrets`},
		{name: "cannot update the webhook configuration", verb: "update", resource: "mutatingwebhookconfigurations",
			wantErr: `forbidden: the caller needs RBAC "get" and "update" on mutatingwebhookconfigurations named podid-webhook`, ready: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t)
			c.PrependReactor(tt.verb, tt.resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "x", errors.New("RBAC: access denied"))
			})
			m := newManager(t, c, &clock{t: start})
			err := m.Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v\nwant %q", err, tt.wantErr)
			}
			if m.Ready() != tt.ready {
				t.Errorf("ready %v, want %v", m.Ready(), tt.ready)
			}
		})
	}
}

func TestMissingWebhookConfigurationStillServes(t *testing.T) {
	c := newClient(t)
	if err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), testWebhook, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, c, &clock{t: start})
	err := m.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "MutatingWebhookConfiguration podid-webhook was not found") {
		t.Fatalf("error %v", err)
	}
	if !m.Ready() {
		t.Error("a missing webhook configuration kept the certificate from loading")
	}
}

// injectOnce runs inject before the first matching write reaches the fake,
// so another writer wins the race between this manager's read and write.
func injectOnce(c *fake.Clientset, verb string, inject func() error) {
	var once sync.Once
	c.PrependReactor(verb, "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		var err error
		once.Do(func() { err = inject() })
		return err != nil, nil, err
	})
}

func TestLosingTheCreateRaceAdoptsTheWinner(t *testing.T) {
	clk := &clock{t: start}
	// The winner runs against its own client; its Secret then appears in
	// the loser's cluster between the loser's Get and Create.
	winnerClient := newClient(t)
	winner := newManager(t, winnerClient, clk)
	if err := winner.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	won := getSecret(t, winnerClient)

	c := newClient(t)
	injectOnce(c, "create", func() error { return c.Tracker().Add(won.DeepCopy()) })
	loser := newManager(t, c, clk)
	if err := loser.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, loser).Raw, served(t, winner).Raw) {
		t.Error("the loser serves its own certificate")
	}
	checkServing(t, c, loser, start)
}

func TestLosingTheUpdateRaceAdoptsTheWinner(t *testing.T) {
	clk := &clock{t: start}
	c := newClient(t)
	if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Set(start.Add(certLife * 8 / 10))

	// The winner renews a copy of the same Secret elsewhere.
	winnerClient := newClient(t, getSecret(t, c))
	winner := newManager(t, winnerClient, clk)
	if err := winner.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	renewed := getSecret(t, winnerClient)

	injectOnce(c, "update", func() error {
		// The tracker, not the clientset: the reactor runs under the
		// clientset's lock.
		// Delete and Add, since the tracker's Update wants the stored
		// resourceVersion and the point is a new one.
		if err := c.Tracker().Delete(secretsGVR, testNS, testSecret); err != nil {
			return err
		}
		renewed.ResourceVersion = "99999"
		return c.Tracker().Add(renewed)
	})
	loser := newManager(t, c, clk)
	if err := loser.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, loser).Raw, served(t, winner).Raw) {
		t.Error("the loser serves its own certificate")
	}
	checkServing(t, c, loser, clk.Now())
}

func TestConcurrentReplicasConverge(t *testing.T) {
	for _, at := range []time.Duration{0, caLife * 8 / 10} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			c := newClient(t)
			clk := &clock{t: start}
			if at > 0 {
				if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
					t.Fatal(err)
				}
				clk.Set(start.Add(at))
			}
			const replicas = 4
			ms := make([]*Manager, replicas)
			errs := make([]error, replicas)
			var wg sync.WaitGroup
			for i := range ms {
				ms[i] = newManager(t, c, clk)
				wg.Go(func() { errs[i] = ms[i].Ensure(context.Background()) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: %v", i, err)
				}
			}
			for i, m := range ms {
				if !bytes.Equal(served(t, m).Raw, served(t, ms[0]).Raw) {
					t.Errorf("replica %d serves another certificate than replica 0", i)
				}
				checkServing(t, c, m, clk.Now())
			}
		})
	}
}

// TestRotationReachesNewConnections serves HTTPS with the manager and checks
// that a rotation is visible to the next handshake without a restart.
func TestRotationReachesNewConnections(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: start}
	m := newManager(t, c, clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{GetCertificate: m.GetCertificate, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	handshake := func() *x509.Certificate {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(getSecret(t, c).Data[KeyCACert])
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
			RootCAs: pool, ServerName: "podid-webhook.podid.svc", Time: clk.Now,
		}}}
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0]
	}
	first := handshake()
	clk.Set(start.Add(certLife * 9 / 10))
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := handshake()
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Error("the next handshake still got the old certificate")
	}
}

func TestRunRetriesUntilLoadedThenChecksPeriodically(t *testing.T) {
	c := newClient(t)
	fails := 2
	c.PrependReactor("get", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewServiceUnavailable("etcd is sad")
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	m := newManager(t, c, &clock{t: start}, func(cfg *ManagerConfig) {
		cfg.CheckInterval = 7 * time.Minute
		cfg.Sleep = func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			if len(waits) == 4 {
				cancel()
				return ctx.Err()
			}
			return nil
		}
	})
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]time.Duration{time.Second, 2 * time.Second, 7 * time.Minute, 7 * time.Minute}, waits); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
	if !m.Ready() {
		t.Error("not ready after Run")
	}
}

func TestNewManagerRejectsBadConfig(t *testing.T) {
	c := newClient(t)
	tests := []struct {
		name string
		cfg  ManagerConfig
	}{
		{name: "no client", cfg: ManagerConfig{Namespace: "a", SecretName: "b", DNSNames: []string{"x"}}},
		{name: "no secret", cfg: ManagerConfig{Client: c, Namespace: "a", DNSNames: []string{"x"}}},
		{name: "no names", cfg: ManagerConfig{Client: c, Namespace: "a", SecretName: "b"}},
		{name: "renew fraction 1", cfg: ManagerConfig{Client: c, Namespace: "a", SecretName: "b", DNSNames: []string{"x"}, RenewFraction: 1}},
		{name: "negative validity", cfg: ManagerConfig{Client: c, Namespace: "a", SecretName: "b", DNSNames: []string{"x"}, CertValidity: -time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewManager(tt.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestRunRetriesCABundlePatchSoon: a webhook configuration applied after the
// webhook started gets its caBundle within seconds, not a CheckInterval.
func TestRunRetriesCABundlePatchSoon(t *testing.T) {
	c := newClient(t)
	configs := c.AdmissionregistrationV1().MutatingWebhookConfigurations()
	wc, err := configs.Get(context.Background(), testWebhook, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := configs.Delete(context.Background(), testWebhook, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	m := newManager(t, c, &clock{t: start}, func(cfg *ManagerConfig) {
		cfg.Sleep = func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			switch len(waits) {
			case 1:
				wc.ResourceVersion = ""
				if _, err := configs.Create(ctx, wc, metav1.CreateOptions{}); err != nil {
					t.Error(err)
				}
			case 2:
				cancel()
				return ctx.Err()
			}
			return nil
		}
	})
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]time.Duration{time.Second, DefaultCheckInterval}, waits); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
	checkServing(t, c, m, start)
}
