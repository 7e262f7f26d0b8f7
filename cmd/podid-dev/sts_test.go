package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// startSTS runs "podid-dev sts args..." in-process and returns the
// variables it exported; stop cancels it and returns its error and stderr.
func startSTS(t *testing.T, args ...string) (env map[string]string, stop func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var errOut bytes.Buffer
	cmd := NewRootCmd()
	cmd.SetArgs(append([]string{"sts"}, args...))
	cmd.SetOut(pw)
	cmd.SetErr(&errOut)
	done := make(chan error, 1)
	go func() {
		err := cmd.ExecuteContext(ctx)
		pw.CloseWithError(errors.New("sts command returned"))
		done <- err
	}()
	var (
		once    sync.Once
		stopErr error
	)
	stop = func() (string, error) {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return errOut.String(), stopErr
	}
	t.Cleanup(func() { stop() })

	env = map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(env) < 3 && sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "unset ") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || !strings.HasPrefix(line, "export ") {
			t.Fatalf("stdout line %q is not an export", line)
		}
		env[name] = unquoteShell(t, val)
	}
	if len(env) < 3 {
		stderr, err := stop()
		t.Fatalf("sts printed %v before ending (err %v, stderr %q)", env, err, stderr)
	}
	return env, stop
}

func unquoteShell(t *testing.T, s string) string {
	t.Helper()
	if len(s) < 2 || s[0] != '\'' || s[len(s)-1] != '\'' {
		t.Fatalf("value %q is not single-quoted", s)
	}
	return strings.ReplaceAll(s[1:len(s)-1], `'\''`, "'")
}

func TestSTSCommandServesAssumeRole(t *testing.T) {
	env, stop := startSTS(t, "--listen", "127.0.0.1:0", "--account", "444455556666")
	for _, k := range []string{"PODID_STS_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if env[k] == "" {
			t.Fatalf("%s not exported; got %v", k, env)
		}
	}
	u, err := url.Parse(env["PODID_STS_ENDPOINT"])
	if err != nil || u.Hostname() != "127.0.0.1" {
		t.Errorf("endpoint %q is not on --listen's host", env["PODID_STS_ENDPOINT"])
	}

	client := sts.New(sts.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(env["PODID_STS_ENDPOINT"]),
		Credentials:  credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], ""),
		Retryer:      aws.NopRetryer{},
	})
	ctx := context.Background()
	id, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(id.Account); got != "444455556666" {
		t.Errorf("caller account = %q, want --account 444455556666", got)
	}
	out, err := client.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String("arn:aws:iam::444455556666:role/checkout"),
		RoleSessionName: aws.String("eks-dev-checkout-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(out.AssumedRoleUser.Arn), "arn:aws:sts::444455556666:assumed-role/checkout/eks-dev-checkout-1"; got != want {
		t.Errorf("assumed role ARN = %q, want %q", got, want)
	}
	if c := out.Credentials; c == nil || aws.ToString(c.AccessKeyId) == "" || aws.ToString(c.SessionToken) == "" {
		t.Errorf("no credentials issued: %+v", c)
	}

	// A wrong secret must be refused: the exported key is the real thing.
	bad := sts.New(sts.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(env["PODID_STS_ENDPOINT"]),
		Credentials:  credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], "wrong", ""),
		Retryer:      aws.NopRetryer{},
	})
	if _, err := bad.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err == nil {
		t.Error("a wrong secret was accepted")
	}

	stderr, err := stop()
	if err != nil {
		t.Fatalf("sts returned %v after cancel", err)
	}
	if !strings.Contains(stderr, "listening on "+env["PODID_STS_ENDPOINT"]) {
		t.Errorf("stderr = %q, want the endpoint", stderr)
	}
	if _, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err == nil {
		t.Error("fake STS still answers after the command ended")
	}
}

func TestSTSCommandListen(t *testing.T) {
	// --listen is honoured: an address in use is an error.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, _, err = execute(t, deps{}, "sts", "--listen", busy.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "--listen "+busy.Addr().String()) {
		t.Errorf("busy --listen: err = %v", err)
	}
}

func TestSTSCommandBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--account", "1234"}, `invalid --account "1234": an AWS account id is exactly 12 digits`},
		{[]string{"--account", "11112222333a"}, `invalid --account "11112222333a"`},
		{[]string{"--listen", "nonsense"}, "--listen nonsense"},
		{[]string{"extra"}, `unknown command "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, _, err := execute(t, deps{}, append([]string{"sts"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}
