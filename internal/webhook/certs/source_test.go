package certs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func issuePair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	ca, err := NewCA("test", start, caLife)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = ca.Issue(serviceName, nil, start, certLife)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func TestFileSourceReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(c, k []byte) {
		t.Helper()
		if err := os.WriteFile(certFile, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c1, k1 := issuePair(t)
	write(c1, k1)
	s, err := NewFileSource(certFile, keyFile, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Ready() || !bytes.Equal(served(t, s).Raw, mustCerts(t, c1)[0].Raw) {
		t.Fatal("first certificate not served")
	}

	c2, k2 := issuePair(t)
	write(c2, k2)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, s).Raw, mustCerts(t, c2)[0].Raw) {
		t.Error("renewed certificate not served")
	}

	// A half-written renewal (new cert, old key) keeps the last good pair.
	c3, _ := issuePair(t)
	write(c3, k2)
	if err := s.Reload(); err == nil {
		t.Error("mismatched pair accepted")
	}
	if !bytes.Equal(served(t, s).Raw, mustCerts(t, c2)[0].Raw) {
		t.Error("a bad reload replaced the served certificate")
	}

	if _, err := NewFileSource(filepath.Join(dir, "missing.crt"), keyFile, 0, nil); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSecretSourceReloads(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s := NewSecretSource(c, testNS, "cm-tls", 0, nil)
	err := s.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "is the cert-manager Certificate ready?") {
		t.Fatalf("missing Secret: %v", err)
	}
	if s.Ready() {
		t.Fatal("ready without a Secret")
	}

	c1, k1 := issuePair(t)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cm-tls", Namespace: testNS}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c1, corev1.TLSPrivateKeyKey: k1}}
	if _, err := c.CoreV1().Secrets(testNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, s).Raw, mustCerts(t, c1)[0].Raw) {
		t.Fatal("first certificate not served")
	}

	c2, k2 := issuePair(t)
	sec, err = c.CoreV1().Secrets(testNS).Get(ctx, "cm-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{corev1.TLSCertKey: c2, corev1.TLSPrivateKeyKey: k2}
	if _, err := c.CoreV1().Secrets(testNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, s).Raw, mustCerts(t, c2)[0].Raw) {
		t.Error("renewed certificate not served")
	}
	if n := writes(c, "secrets"); n != 2 {
		t.Errorf("%d writes to secrets, want only the test's 2", n)
	}
}
