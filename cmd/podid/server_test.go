package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/podid/podid/api"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServerFirstRun starts `podid server` the way the README does, with
// nothing but a data directory, and uses it with the real SDK.
func TestServerFirstRun(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	addr := freeAddr(t)
	t.Setenv("PODID_LISTEN", addr)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := NewRootCmd()
		cmd.SetArgs([]string{"server", "--log-level", "warn"})
		done <- cmd.ExecuteContext(ctx)
	}()
	endpoint := "http://" + addr
	waitHealthy(t, endpoint, done)

	dir := filepath.Join(data, "podid")
	if _, err := os.Stat(filepath.Join(dir, "podid.db")); err != nil {
		t.Errorf("no database in the data dir: %v", err)
	}
	keysPath := filepath.Join(dir, "keys.json")
	st, err := os.Stat(keysPath)
	if err != nil {
		t.Fatalf("no keys file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("keys file mode %v, want 0600", st.Mode().Perm())
	}
	var keys struct {
		Keys []struct{ AccessKeyID, SecretAccessKey, Scope string }
	}
	raw, _ := os.ReadFile(keysPath)
	if err := json.Unmarshal(raw, &keys); err != nil || len(keys.Keys) != 1 || keys.Keys[0].Scope != "admin" {
		t.Fatalf("keys file %s: %v", raw, err)
	}
	k := keys.Keys[0]
	creds := credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, "")

	jwks, err := os.ReadFile("../../testdata/kubernetes-1.37/cluster-a/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	admin := &api.Client{Endpoint: endpoint, Credentials: creds}
	if _, err := admin.RegisterCluster(ctx, api.Cluster{Name: "demo", Issuer: "https://cluster-a.podid.test", Keys: api.KeySource{Kind: "jwks", JWKS: string(jwks)}}); err != nil {
		t.Fatalf("register: %v", err)
	}
	c := eks.New(eks.Options{BaseEndpoint: aws.String(endpoint), Region: "us-east-1", Credentials: creds})
	out, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("demo"), Namespace: aws.String("shop"), ServiceAccount: aws.String("checkout"),
		RoleArn: aws.String("arn:aws:iam::000000000000:role/demo"),
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !strings.HasPrefix(aws.ToString(out.Association.AssociationArn), "arn:aws:eks:us-east-1:000000000000:podidentityassociation/demo/a-") {
		t.Errorf("association ARN %q", aws.ToString(out.Association.AssociationArn))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server stopped with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop after cancel")
	}

	// A second start reuses the database and keys.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		cmd := NewRootCmd()
		cmd.SetArgs([]string{"server", "--log-level", "warn"})
		done <- cmd.ExecuteContext(ctx2)
	}()
	waitHealthy(t, endpoint, done)
	l, err := c.ListPodIdentityAssociations(ctx2, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("demo")})
	if err != nil || len(l.Associations) != 1 {
		t.Fatalf("after restart: %v, %v", l, err)
	}
	cancel2()
	<-done
}

func waitHealthy(t *testing.T, endpoint string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("server exited: %v", err)
		default:
		}
		resp, err := http.Get(endpoint + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server did not become healthy")
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "podid.json")
	if err := os.WriteFile(cfg, []byte(`{"listen":"file:1","region":"eu-west-1","account":"123456789012","session-duration":"1h"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newServerCmd().Flags()
	if err := fs.Parse([]string{"--listen", "flag:1"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODID_LISTEN", "env:1")
	t.Setenv("PODID_REGION", "eu-central-1")
	file, err := readConfigFile(cfg, fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyLayers(fs, file); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"listen":           "flag:1",       // flag beats env and file
		"region":           "eu-central-1", // env beats file
		"account":          "123456789012", // file beats default
		"session-duration": "1h0m0s",
		"store":            "", // default
	} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}

	bad := filepath.Join(dir, "bad.json")
	for body, wantErr := range map[string]string{
		`{"lisen":"x"}`:            "unknown setting",
		`not json`:                 "not a JSON object",
		`{"session-duration":"x"}`: "session-duration",
		`{"account":["a"]}`:        "account",
	} {
		if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := newServerCmd().Flags()
		file, err := readConfigFile(bad, fs)
		if err == nil {
			err = applyLayers(fs, file)
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("config %s: error %v, want one mentioning %q", body, err, wantErr)
		}
	}
}

func TestServerRejectsBadSettings(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "--account", "12"}, "account"},
		{[]string{"server", "--region", "mars"}, "region"},
		{[]string{"server", "--tls-cert", "x.pem"}, "--tls-key"},
		{[]string{"server", "--store", "mysql://x"}, "mysql"},
		{[]string{"server", "--listen", "127.0.0.1:99999"}, "99999"},
		{[]string{"server", "--log-level", "loud"}, "log level"},
		{[]string{"server", "--session-duration", "1m"}, "session duration"},
		{[]string{"server", "--policy-file", "/nonexistent/policy.json"}, "policy file"},
		{[]string{"server", "--rate-limit-per-key", "-1"}, "must not be negative"},
	} {
		cmd := NewRootCmd()
		cmd.SetArgs(append(tc.args, "--listen", "127.0.0.1:0"))
		if tc.args[1] == "--listen" {
			cmd.SetArgs(tc.args)
		}
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}

// TestServerTLS serves HTTPS when given a certificate and key.
func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", dir)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "podid"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		cmd := NewRootCmd()
		cmd.SetArgs([]string{"server", "--listen", addr, "--tls-cert", certFile, "--tls-key", keyFile, "--log-level", "warn"})
		done <- cmd.ExecuteContext(ctx)
	}()
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.TLS == nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, tls %v", resp.StatusCode, resp.TLS != nil)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served on the TLS port")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("server stopped with %v", err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
