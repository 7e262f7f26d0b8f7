package main

import (
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
)

// TestAssociationCommands drives every association subcommand against a
// real podid server, in table, JSON and YAML, and checks the transcript.
func TestAssociationCommands(t *testing.T) {
	s := startCLIStack(t, "demo", "other")
	admin, ro := &s.admin, &s.readOnly
	const role = "arn:aws:iam::111122223333:role/web"

	s.mustRun(t, 0, admin, "association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "web",
		"--role-arn", role, "--tag", "team=payments", "--tag", "env=prod")
	s.mustRun(t, 0, admin, "association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "api",
		"--role-arn", "arn:aws:iam::111122223333:role/api", "--target-role-arn", "arn:aws:iam::444455556666:role/api", "-o", "json")
	s.mustRun(t, 0, admin, "association", "create", "--cluster", "other", "--namespace", "batch", "--service-account", "report",
		"--role-arn", "arn:aws:iam::111122223333:role/report", "--disable-session-tags",
		"--policy", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`, "-o", "yaml")

	// Reads work with a read-only key; list spans clusters and pages.
	list := s.mustRun(t, 0, ro, "association", "list")
	if got := strings.Count(list.out, "\n"); got != 4 {
		t.Errorf("list printed %d lines, want a header and 3 rows:\n%s", got, list.out)
	}
	s.mustRun(t, 0, ro, "association", "list", "--cluster", "demo", "-o", "json")
	s.mustRun(t, 0, ro, "association", "list", "--cluster", "demo", "--service-account", "web")
	s.mustRun(t, 0, ro, "association", "list", "--cluster", "other", "-o", "yaml")
	s.mustRun(t, 0, ro, "association", "describe", "--cluster", "demo", "--namespace", "shop", "--service-account", "api")

	s.mustRun(t, 0, admin, "association", "update", "--cluster", "demo", "--namespace", "shop", "--service-account", "api",
		"--role-arn", "arn:aws:iam::111122223333:role/api-v2", "--target-role-arn", "")
	s.mustRun(t, 1, admin, "association", "update", "--cluster", "demo", "--namespace", "shop", "--service-account", "api")
	s.mustRun(t, 0, admin, "association", "delete", "--cluster", "demo", "--namespace", "shop", "--service-account", "api")
	s.mustRun(t, 2, ro, "association", "describe", "--cluster", "demo", "--namespace", "shop", "--service-account", "api")
	s.mustRun(t, 0, ro, "association", "list", "--cluster", "demo", "--namespace", "nothing-here")

	// The store has what the commands said.
	out, err := s.eks(t).ListPodIdentityAssociations(t.Context(), &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("demo")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Associations) != 1 || aws.ToString(out.Associations[0].ServiceAccount) != "web" {
		t.Errorf("demo has %+v, want only shop/web", out.Associations)
	}
	s.golden(t, "association")
}

// TestAssociationPaging lists more associations than one page holds.
func TestAssociationPaging(t *testing.T) {
	s := startCLIStack(t, "demo")
	for i := range 101 {
		s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("ns"),
			ServiceAccount: aws.String("sa-" + string(rune('a'+i/26)) + string(rune('a'+i%26))), RoleArn: aws.String("arn:aws:iam::111122223333:role/r")})
	}
	r := s.mustRun(t, 0, &s.readOnly, "association", "list", "--cluster", "demo", "-o", "json")
	if got := strings.Count(r.out, `"associationId"`); got != 101 {
		t.Errorf("json list has %d associations, want 101", got)
	}
	r = s.mustRun(t, 0, &s.readOnly, "association", "list", "--cluster", "demo")
	if got := strings.Count(r.out, "arn:aws:iam::111122223333:role/r"); got != 101 {
		t.Errorf("table list has %d rows with the role, want 101", got)
	}
}

// TestClientErrors checks each failure's exit code and what it says to do.
func TestClientErrors(t *testing.T) {
	s := startCLIStack(t, "demo")
	admin := &s.admin
	create := []string{"association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "web", "--role-arn", "arn:aws:iam::111122223333:role/web"}
	s.mustRun(t, 0, admin, create...)
	s.mustRun(t, 4, admin, create...)                                                                                                                                                   // duplicate
	s.mustRun(t, 3, &s.readOnly, "association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "other", "--role-arn", "arn:aws:iam::111122223333:role/web") // read-only writes
	s.mustRun(t, 3, &s.agent, "association", "list", "--cluster", "demo")                                                                                                               // agent key reads
	unknown := s.admin
	unknown.AccessKeyID = "PODIDUNKNOWNKEY00000"
	s.mustRun(t, 3, &unknown, "association", "list", "--cluster", "demo")
	wrongSecret := s.admin
	wrongSecret.SecretAccessKey = "not-the-secret"
	s.mustRun(t, 3, &wrongSecret, "association", "list", "--cluster", "demo")
	s.mustRun(t, 3, nil, "association", "list", "--cluster", "demo")                                      // no credentials
	s.mustRun(t, 2, admin, "association", "list", "--cluster", "nope")                                    // unknown cluster
	s.mustRun(t, 2, admin, "association", "describe", "--cluster", "demo", "--id", "a-0000000000000000a") // unknown id
	s.mustRun(t, 1, admin, "association", "describe", "--cluster", "demo", "--id", "bad-id")              // rejected parameter
	s.mustRun(t, 1, admin, "association", "create", "--cluster", "demo", "--namespace", "shop")           // missing flags
	s.mustRun(t, 1, admin, "association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "x", "--role-arn", "arn:aws:iam::111122223333:role/x", "--tag", "novalue")
	s.mustRun(t, 1, admin, "association", "list", "-o", "xml")
	s.mustRun(t, 1, admin, "association", "list", "--no-such-flag")
	s.mustRun(t, 1, admin, "audit", "--outcome", "maybe")

	t.Setenv("PODID_SERVER", "")
	s.mustRun(t, 1, admin, "association", "list", "--cluster", "demo")
	t.Setenv("AWS_MAX_ATTEMPTS", "1") // the SDK would otherwise retry the refused connection with backoff
	down := "http://" + freeAddr(t)
	s.mustRun(t, 5, admin, "association", "list", "--cluster", "demo", "--server", down)
	s.mustRun(t, 5, admin, "audit", "--server", down)
	golden(t, "errors", strings.ReplaceAll(s.transcript.String(), strings.TrimPrefix(down, "http://"), "127.0.0.1:DOWN"))
}

// TestClientTLS reaches podid server over HTTPS with --server-ca, and says
// what to do without it.
func TestClientTLS(t *testing.T) {
	s := startCLIStack(t, "demo")
	target, _ := url.Parse(s.url)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	front.StartTLS()
	defer front.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODID_SERVER", front.URL)
	s.mustRun(t, 0, &s.readOnly, "association", "list", "--cluster", "demo", "--server-ca", ca)
	t.Setenv("PODID_SERVER_CA", ca)
	s.mustRun(t, 0, &s.readOnly, "audit")
	os.Unsetenv("PODID_SERVER_CA")
	r := s.mustRun(t, 6, &s.readOnly, "association", "list", "--cluster", "demo")
	if !strings.Contains(r.err, "--server-ca") {
		t.Errorf("the error does not point to --server-ca: %s", r.err)
	}
	r = s.mustRun(t, 6, &s.readOnly, "audit", "--server", strings.Replace(s.url, "http:", "https:", 1))
	if !strings.Contains(r.err, "use http://") {
		t.Errorf("the error does not suggest http://: %s", r.err)
	}
	s.mustRun(t, 1, &s.readOnly, "audit", "--server-ca", filepath.Join(t.TempDir(), "missing.pem"))
}

// TestClientProfile signs with a key from an AWS profile.
func TestClientProfile(t *testing.T) {
	s := startCLIStack(t, "demo")
	creds := filepath.Join(t.TempDir(), "credentials")
	content := "[podid-viewer]\naws_access_key_id = " + s.readOnly.AccessKeyID + "\naws_secret_access_key = " + s.readOnly.SecretAccessKey + "\n"
	if err := os.WriteFile(creds, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	s.mustRun(t, 0, nil, "association", "list", "--cluster", "demo", "--profile", "podid-viewer")
	t.Setenv("PODID_PROFILE", "podid-viewer")
	r := s.mustRun(t, 3, nil, "association", "create", "--cluster", "demo", "--namespace", "shop", "--service-account", "web", "--role-arn", "arn:aws:iam::111122223333:role/web")
	if !strings.Contains(r.err, "admin scope") {
		t.Errorf("a read-only profile's write: %s", r.err)
	}
	s.mustRun(t, 1, nil, "association", "list", "--cluster", "demo", "--profile", "no-such-profile")
}
