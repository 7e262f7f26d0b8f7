package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/sts/ststest"
)

var updateCLIGolden = flag.Bool("update-cli-golden", false, "rewrite testdata/cli/*.golden from the current output")

// cliStack is `podid server` started through its command with the STS test
// server behind it, a key of each scope and clusters whose tokens a test
// can mint. Client commands reach it through PODID_SERVER and the AWS
// credential environment variables, as an operator's shell would.
type cliStack struct {
	url                    string
	admin, readOnly, agent auth.Key
	sts                    *ststest.Server
	issuer                 *k8stest.Issuer
	transcript             strings.Builder
}

func startCLIStack(t *testing.T, clusters ...string) *cliStack {
	t.Helper()
	dir := t.TempDir()
	s := &cliStack{sts: ststest.New(t)}
	var err error
	if s.issuer, err = k8stest.NewIssuer("https://demo.podid.test", "RS256"); err != nil {
		t.Fatal(err)
	}
	s.admin, _ = auth.GenerateKey("ops", auth.ScopeAdmin, nil)
	s.readOnly, _ = auth.GenerateKey("viewer", auth.ScopeReadOnly, nil)
	s.agent, _ = auth.GenerateKey("agent", auth.ScopeAgent, []string{auth.AllClusters})
	keys, _ := json.Marshal(map[string]any{"keys": []auth.Key{s.admin, s.readOnly, s.agent}})
	keysFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keysFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	stsCreds, _ := s.sts.Credentials().Retrieve(context.Background())
	t.Setenv("AWS_ACCESS_KEY_ID", stsCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", stsCreds.SecretAccessKey)
	isolateAWSEnv(t)
	// The client settings are unset, not empty: podid server reads
	// PODID_REGION too, and an empty one is an error.
	for _, k := range clientFlagEnv {
		k = "PODID_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := runCmd(t, ctx, "server", "--listen", addr, "--data-dir", dir, "--keys-file", keysFile,
		"--sts-endpoint", s.sts.URL, "--account", "111122223333", "--log-level", "error")
	t.Cleanup(func() { cancel(); <-done })
	s.url = "http://" + addr
	waitHealthy(t, s.url, done)
	for _, name := range clusters {
		if _, err := s.client(s.admin).RegisterCluster(ctx, api.Cluster{Name: name, Issuer: s.issuer.URL, Keys: api.KeySource{Kind: "jwks", JWKS: s.issuer.JWKS()}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PODID_SERVER", s.url)
	return s
}

// golden checks the transcript so far against testdata/cli/name.golden.
func (s *cliStack) golden(t *testing.T, name string) {
	t.Helper()
	golden(t, name, strings.ReplaceAll(s.transcript.String(), s.url, "http://SERVER"))
}

func (s *cliStack) client(k auth.Key) *api.Client {
	return &api.Client{Endpoint: s.url, Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, "")}
}

func (s *cliStack) eks(t *testing.T) *eks.Client {
	return eks.New(eks.Options{BaseEndpoint: aws.String(s.url), Region: "us-east-1", Credentials: s.client(s.admin).Credentials})
}

// createDirect makes an association with the SDK, not the CLI.
func (s *cliStack) createDirect(t *testing.T, in *eks.CreatePodIdentityAssociationInput) string {
	t.Helper()
	out, err := s.eks(t).CreatePodIdentityAssociation(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Association.AssociationId)
}

// assume exchanges a token as the agent would and returns the error type
// ("" when credentials were issued).
func (s *cliStack) assume(t *testing.T, cluster, token, node string) string {
	t.Helper()
	_, err := s.client(s.agent).AssumeRoleForPodIdentity(context.Background(), cluster, api.AssumeRoleForPodIdentityRequest{Token: token, EksNodeName: node})
	if err != nil && api.ErrorType(err) == "" {
		t.Fatal(err)
	}
	return api.ErrorType(err)
}

func (s *cliStack) token(t *testing.T, ns, sa, pod string) string {
	t.Helper()
	tok, err := s.issuer.Token(k8stest.Pod{Namespace: ns, ServiceAccount: sa, Name: pod, UID: "uid-" + pod, NodeName: "node-1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type cliResult struct {
	out, err string
	code     int
}

// run runs one podid command to completion signed with key (nil: no
// credentials at all) and records it in the transcript. Its error is
// printed as main prints it.
func (s *cliStack) run(t *testing.T, key *auth.Key, args ...string) cliResult {
	t.Helper()
	return s.runWith(t, NewRootCmd(), key, args...)
}

// runWith runs cmd, which is the root command or a subcommand built for
// the test; args start with the subcommand's name either way.
func (s *cliStack) runWith(t *testing.T, cmd *cobra.Command, key *auth.Key, args ...string) cliResult {
	t.Helper()
	setKey(t, key)
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	if cmd.Name() != "podid" {
		// A subcommand built on its own lacks the root's settings.
		cmd.SetArgs(args[1:])
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
	}
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintln(&errOut, "podid:", err)
	}
	r := cliResult{out: out.String(), err: errOut.String(), code: exitCode(err)}
	fmt.Fprintf(&s.transcript, "$ podid %s\n%s", strings.Join(quoteArgs(args), " "), r.out)
	if r.err != "" {
		fmt.Fprintf(&s.transcript, "[stderr]\n%s", r.err)
	}
	fmt.Fprintf(&s.transcript, "[exit %d]\n\n", r.code)
	return r
}

func setKey(t *testing.T, key *auth.Key) {
	t.Helper()
	if key == nil {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		os.Unsetenv("AWS_ACCESS_KEY_ID")
		os.Unsetenv("AWS_SECRET_ACCESS_KEY")
		return
	}
	t.Setenv("AWS_ACCESS_KEY_ID", key.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", key.SecretAccessKey)
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " {}\"'") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

// mustRun runs a command that must exit with code.
func (s *cliStack) mustRun(t *testing.T, code int, key *auth.Key, args ...string) cliResult {
	t.Helper()
	r := s.run(t, key, args...)
	if r.code != code {
		t.Fatalf("podid %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.out, r.err)
	}
	return r
}

var (
	idRE        = regexp.MustCompile(`\ba-[a-z0-9]{17}\b`)
	timeRE      = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	epochRE     = regexp.MustCompile(`("(?:createdAt|modifiedAt|time)": ?)[0-9.]+`)
	yamlEpochRE = regexp.MustCompile(`((?:createdAt|modifiedAt|time): )[0-9.e+]+`)
	uuidRE      = regexp.MustCompile(`\b[a-z0-9]{8}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{12}\b`)
	keyIDRE     = regexp.MustCompile(`token key \\?"[A-Za-z0-9_-]{43}\\?"`)
	stsReqRE    = regexp.MustCompile(`("stsRequestId": ?)"[^"]*"`)
)

// normalize replaces what changes from run to run: association ids (by
// order of first appearance), times, external ids, the server's port.
func normalize(s string) string {
	ids := map[string]string{}
	s = idRE.ReplaceAllStringFunc(s, func(id string) string {
		if n, ok := ids[id]; ok {
			return n
		}
		n := fmt.Sprintf("a-%017d", len(ids)+1)
		ids[id] = n
		return n
	})
	s = timeRE.ReplaceAllString(s, "2006-01-02T15:04:05Z")
	s = epochRE.ReplaceAllString(s, "${1}1700000000")
	s = yamlEpochRE.ReplaceAllString(s, "${1}1700000000")
	s = uuidRE.ReplaceAllString(s, "00000000-0000-0000-0000-000000000000")
	s = keyIDRE.ReplaceAllString(s, "token key KEY-ID")
	return stsReqRE.ReplaceAllString(s, `${1}"REQUEST-ID"`)
}

// golden compares got, normalized, with testdata/cli/name.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = normalize(got)
	path := filepath.Join("testdata", "cli", name+".golden")
	if *updateCLIGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update-cli-golden to create it)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update-cli-golden rewrites it):\n%s", path, diff)
	}
}
