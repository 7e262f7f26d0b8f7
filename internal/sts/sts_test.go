package sts_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssts "github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

func TestMain(m *testing.M) {
	// Keep a developer's AWS environment (profile, CA bundle, endpoints,
	// shared files) out of the tests.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			os.Unsetenv(k)
		}
	}
	dir, err := os.MkdirTemp("", "podid-sts-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	roleARN   = "arn:aws:iam::123456789012:role/app"
	targetARN = "arn:aws:iam::210987654321:role/path/to/target"
	session   = "eks-prod-web-7d9f-abcdef"
)

// now is the fake STS's fixed clock: close enough to the wall clock that the
// SDK's signatures are fresh, fixed so expirations are exact.
var now = time.Now().UTC().Truncate(time.Second)

func newServer(t testing.TB, opts ...ststest.Option) *ststest.Server {
	t.Helper()
	return ststest.New(t, append([]ststest.Option{ststest.WithClock(func() time.Time { return now })}, opts...)...)
}

func newIssuer(t testing.TB, srv *ststest.Server, mod ...func(*sts.Config)) *sts.Issuer {
	t.Helper()
	cfg := sts.Config{
		Endpoint:    srv.URL,
		Region:      "us-west-2",
		Credentials: srv.Credentials(),
		MaxBackoff:  time.Millisecond,
	}
	for _, m := range mod {
		m(&cfg)
	}
	iss, err := sts.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func podTags() []identity.Tag {
	return []identity.Tag{
		{Key: "eks-cluster-arn", Value: "arn:aws:eks:us-west-2:123456789012:cluster/prod"},
		{Key: "eks-cluster-name", Value: "prod"},
		{Key: "kubernetes-namespace", Value: "default"},
		{Key: "kubernetes-service-account", Value: "web"},
		{Key: "kubernetes-pod-name", Value: "web-7d9f"},
		{Key: "kubernetes-pod-uid", Value: "0b4c2a3e-1f0d-4c8e-9f6a-2d3b4c5d6e7f"},
	}
}

func tagKeys(tags []identity.Tag) []string {
	var keys []string
	for _, t := range tags {
		keys = append(keys, t.Key)
	}
	return keys
}

func podInput() identity.AssumeRoleInput {
	return identity.AssumeRoleInput{
		RoleARN:           roleARN,
		RoleSessionName:   session,
		Tags:              podTags(),
		TransitiveTagKeys: tagKeys(podTags()),
		Duration:          6 * time.Hour,
	}
}

// ignoreIssued drops the fields the fake STS makes up per call.
var ignoreIssued = cmpopts.IgnoreFields(ststest.Call{}, "RequestID", "AccessKeyID", "CallerAccessKeyID")

func TestAssumeRoleWithSessionTags(t *testing.T) {
	srv := newServer(t)
	iss := newIssuer(t, srv)

	got, err := iss.AssumeRole(context.Background(), podInput())
	if err != nil {
		t.Fatal(err)
	}
	calls := srv.Calls()
	if len(calls) != 1 {
		t.Fatalf("got %d STS calls, want 1", len(calls))
	}
	want := ststest.Call{
		CallerARN:         "arn:aws:iam::" + ststest.DefaultAccount + ":user/podid-test",
		RoleARN:           roleARN,
		RoleSessionName:   session,
		Tags:              podTags(),
		TransitiveTagKeys: tagKeys(podTags()),
		DurationSeconds:   6 * 3600,
		EffectiveTags:     podTags(),
	}
	if diff := cmp.Diff(want, calls[0], ignoreIssued); diff != "" {
		t.Errorf("STS call (-want +got):\n%s", diff)
	}
	if calls[0].CallerAccessKeyID != ststest.BaseAccessKeyID {
		t.Errorf("signed by %q, want the base key", calls[0].CallerAccessKeyID)
	}

	if got.ARN != "arn:aws:sts::123456789012:assumed-role/app/"+session {
		t.Errorf("ARN = %q", got.ARN)
	}
	if !strings.HasPrefix(got.AssumedRoleID, "AROA") || !strings.HasSuffix(got.AssumedRoleID, ":"+session) {
		t.Errorf("AssumedRoleID = %q, want AROA…:%s", got.AssumedRoleID, session)
	}
	if got.RequestID != calls[0].RequestID || got.RequestID == "" {
		t.Errorf("RequestID = %q, want %q", got.RequestID, calls[0].RequestID)
	}
	c := got.Credentials
	if c.AccessKeyID != calls[0].AccessKeyID || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
		t.Errorf("AccessKeyID = %q, want the issued ASIA key %q", c.AccessKeyID, calls[0].AccessKeyID)
	}
	if c.SecretAccessKey == "" || c.SessionToken == "" {
		t.Error("secret or session token empty")
	}
	if !c.Expiration.Equal(now.Add(6 * time.Hour)) {
		t.Errorf("Expiration = %v, want %v", c.Expiration, now.Add(6*time.Hour))
	}

	// The issued credentials work against STS.
	who := callerIdentity(t, srv, credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken))
	if who != got.ARN {
		t.Errorf("GetCallerIdentity with issued credentials = %q, want %q", who, got.ARN)
	}
}

func callerIdentity(t *testing.T, srv *ststest.Server, creds aws.CredentialsProvider) string {
	t.Helper()
	client := awssts.New(awssts.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv.URL), Credentials: creds})
	out, err := client.GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Arn)
}

func TestAssumeRoleChained(t *testing.T) {
	tests := []struct {
		name         string
		duration     time.Duration
		transitive   []string
		wantDuration int
		wantInherit  []identity.Tag
	}{
		{
			name:         "six hours capped at one",
			duration:     6 * time.Hour,
			transitive:   tagKeys(podTags()),
			wantDuration: 3600,
			wantInherit:  podTags(),
		},
		{
			name:         "short duration kept",
			duration:     30 * time.Minute,
			transitive:   tagKeys(podTags()),
			wantDuration: 1800,
			wantInherit:  podTags(),
		},
		{
			name:         "default duration",
			transitive:   []string{"eks-cluster-name", "kubernetes-namespace"},
			wantDuration: 3600,
			wantInherit:  []identity.Tag{podTags()[1], podTags()[2]},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			iss := newIssuer(t, srv)
			in := podInput()
			in.Duration = tt.duration
			in.TransitiveTagKeys = tt.transitive
			in.TargetRoleARN = targetARN
			in.TargetExternalID = "prod/default/web"

			got, err := iss.AssumeRole(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			calls := srv.Calls()
			if len(calls) != 2 {
				t.Fatalf("got %d STS calls, want 2", len(calls))
			}
			first, second := calls[0], calls[1]
			want := ststest.Call{
				CallerARN:       "arn:aws:sts::123456789012:assumed-role/app/" + session,
				Chained:         true,
				RoleARN:         targetARN,
				RoleSessionName: session,
				ExternalID:      "prod/default/web",
				DurationSeconds: tt.wantDuration,
				EffectiveTags:   tt.wantInherit,
			}
			if diff := cmp.Diff(want, second, ignoreIssued, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("chained STS call (-want +got):\n%s", diff)
			}
			if second.CallerAccessKeyID != first.AccessKeyID {
				t.Errorf("chained call signed by %q, want the first session's key %q", second.CallerAccessKeyID, first.AccessKeyID)
			}
			if got.ARN != "arn:aws:sts::210987654321:assumed-role/target/"+session {
				t.Errorf("ARN = %q", got.ARN)
			}
			if got.Credentials.AccessKeyID != second.AccessKeyID {
				t.Errorf("returned key %q, want the target session's %q", got.Credentials.AccessKeyID, second.AccessKeyID)
			}
			if want := first.RequestID + "," + second.RequestID; got.RequestID != want {
				t.Errorf("RequestID = %q, want %q", got.RequestID, want)
			}
			if want := now.Add(time.Duration(tt.wantDuration) * time.Second); !got.Credentials.Expiration.Equal(want) {
				t.Errorf("Expiration = %v, want %v", got.Credentials.Expiration, want)
			}
		})
	}
}

func TestAssumeRoleValidation(t *testing.T) {
	tags := func(n int) []identity.Tag {
		var out []identity.Tag
		for i := range n {
			out = append(out, identity.Tag{Key: "k" + strings.Repeat("x", i), Value: "v"})
		}
		return out
	}
	tests := []struct {
		name     string
		mod      func(*identity.AssumeRoleInput)
		wantCode string // STS error code; "" = accepted
	}{
		{"role ARN short account", func(in *identity.AssumeRoleInput) { in.RoleARN = "arn:aws:iam::12345:role/app" }, "ValidationError"},
		{"role ARN not a role", func(in *identity.AssumeRoleInput) { in.RoleARN = "arn:aws:iam::123456789012:user/app" }, "ValidationError"},
		{"role ARN other service", func(in *identity.AssumeRoleInput) { in.RoleARN = "arn:aws:s3:::123456789012-bucket/role/x" }, "ValidationError"},
		{"role ARN too short", func(in *identity.AssumeRoleInput) { in.RoleARN = "arn:aws:iam::1:r" }, "ValidationError"},
		{"role ARN with path", func(in *identity.AssumeRoleInput) { in.RoleARN = "arn:aws:iam::123456789012:role/a/b/app" }, ""},
		{"session name 1 char", func(in *identity.AssumeRoleInput) { in.RoleSessionName = "a" }, "ValidationError"},
		{"session name 2 chars", func(in *identity.AssumeRoleInput) { in.RoleSessionName = "ab" }, ""},
		{"session name 64 chars", func(in *identity.AssumeRoleInput) { in.RoleSessionName = strings.Repeat("s", 64) }, ""},
		{"session name 65 chars", func(in *identity.AssumeRoleInput) { in.RoleSessionName = strings.Repeat("s", 65) }, "ValidationError"},
		{"session name space", func(in *identity.AssumeRoleInput) { in.RoleSessionName = "a b" }, "ValidationError"},
		{"session name slash", func(in *identity.AssumeRoleInput) { in.RoleSessionName = "a/b" }, "ValidationError"},
		{"session name all allowed", func(in *identity.AssumeRoleInput) { in.RoleSessionName = "aZ9_+=,.@-" }, ""},
		{"50 tags", func(in *identity.AssumeRoleInput) { in.Tags, in.TransitiveTagKeys = tags(50), nil }, ""},
		{"51 tags", func(in *identity.AssumeRoleInput) { in.Tags, in.TransitiveTagKeys = tags(51), nil }, "ValidationError"},
		{"no tags", func(in *identity.AssumeRoleInput) { in.Tags, in.TransitiveTagKeys = nil, nil }, ""},
		{"tag key empty", func(in *identity.AssumeRoleInput) { in.Tags[0].Key = "" }, "ValidationError"},
		{"tag key 128", func(in *identity.AssumeRoleInput) {
			in.Tags, in.TransitiveTagKeys = []identity.Tag{{Key: strings.Repeat("k", 128), Value: strings.Repeat("v", 256)}}, nil
		}, ""},
		{"tag key 129", func(in *identity.AssumeRoleInput) {
			in.Tags, in.TransitiveTagKeys = []identity.Tag{{Key: strings.Repeat("k", 129), Value: "v"}}, nil
		}, "ValidationError"},
		{"tag key bad char", func(in *identity.AssumeRoleInput) {
			in.Tags, in.TransitiveTagKeys = []identity.Tag{{Key: "team!", Value: "v"}}, nil
		}, "ValidationError"},
		{"tag key unicode letters", func(in *identity.AssumeRoleInput) {
			in.Tags, in.TransitiveTagKeys = []identity.Tag{{Key: "équipe 1:/=+-@_.", Value: "ß"}}, nil
		}, ""},
		{"tag value empty", func(in *identity.AssumeRoleInput) { in.Tags[1].Value = "" }, ""},
		{"tag value 257", func(in *identity.AssumeRoleInput) { in.Tags[1].Value = strings.Repeat("v", 257) }, "ValidationError"},
		{"tag value bad char", func(in *identity.AssumeRoleInput) { in.Tags[1].Value = "a*b" }, "ValidationError"},
		{"duplicate tag keys", func(in *identity.AssumeRoleInput) {
			in.Tags = append(in.Tags, identity.Tag{Key: "EKS-Cluster-Name", Value: "x"})
		}, "InvalidParameterValue"},
		{"transitive key not a tag", func(in *identity.AssumeRoleInput) {
			in.TransitiveTagKeys = append(in.TransitiveTagKeys, "team")
		}, "InvalidParameterValue"},
		{"external id 1 char", func(in *identity.AssumeRoleInput) { in.ExternalID = "x" }, "ValidationError"},
		{"external id 1224", func(in *identity.AssumeRoleInput) { in.ExternalID = strings.Repeat("x", 1224) }, ""},
		{"external id 1225", func(in *identity.AssumeRoleInput) { in.ExternalID = strings.Repeat("x", 1225) }, "ValidationError"},
		{"external id bad char", func(in *identity.AssumeRoleInput) { in.ExternalID = "us-west-2/1234 5" }, "ValidationError"},
		{"external id pod identity shape", func(in *identity.AssumeRoleInput) {
			in.ExternalID = "us-west-2/123456789012/prod/default/web"
		}, ""},
		{"duration 899s", func(in *identity.AssumeRoleInput) { in.Duration = 899 * time.Second }, "ValidationError"},
		{"duration 900s", func(in *identity.AssumeRoleInput) { in.Duration = 900 * time.Second }, ""},
		{"duration 12h", func(in *identity.AssumeRoleInput) { in.Duration = 12 * time.Hour }, ""},
		{"duration beyond int32 seconds", func(in *identity.AssumeRoleInput) { in.Duration = 1 << 62 }, "ValidationError"},
		{"duration 12h1s", func(in *identity.AssumeRoleInput) { in.Duration = 12*time.Hour + time.Second }, "ValidationError"},
		{"policy valid", func(in *identity.AssumeRoleInput) {
			in.Policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
		}, ""},
		{"policy not JSON", func(in *identity.AssumeRoleInput) { in.Policy = `{"Version":` }, "MalformedPolicyDocument"},
		{"policy 2048", func(in *identity.AssumeRoleInput) {
			in.Policy = `{"Sid":"` + strings.Repeat("a", 2048-10) + `"}`
		}, ""},
		{"policy 2049", func(in *identity.AssumeRoleInput) {
			in.Policy = `{"Sid":"` + strings.Repeat("a", 2049-10) + `"}`
		}, "ValidationError"},
		{"policy char above U+00FF", func(in *identity.AssumeRoleInput) { in.Policy = `{"Sid":"Ā"}` }, "ValidationError"},
		{"packed too large", func(in *identity.AssumeRoleInput) {
			in.Tags, in.TransitiveTagKeys = nil, nil
			for i := range 30 {
				in.Tags = append(in.Tags, identity.Tag{Key: strings.Repeat("k", 120) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: strings.Repeat("v", 256)})
			}
		}, "PackedPolicyTooLarge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			iss := newIssuer(t, srv)
			in := podInput()
			tt.mod(&in)

			_, err := iss.AssumeRole(context.Background(), in)
			calls := srv.Calls()
			if len(calls) != 1 {
				t.Fatalf("got %d STS calls, want 1 (validation errors are not retried)", len(calls))
			}
			if calls[0].ErrorCode != tt.wantCode {
				t.Errorf("STS answered %q, want %q", calls[0].ErrorCode, tt.wantCode)
			}
			if tt.wantCode == "" {
				if err != nil {
					t.Errorf("AssumeRole: %v", err)
				}
				return
			}
			if got := identity.CodeOf(err); got != identity.CodeInvalidParameter {
				t.Errorf("code = %v, want CodeInvalidParameter (err %v)", got, err)
			}
			var ie *identity.Error
			if errors.As(err, &ie) && !strings.Contains(ie.Message, in.RoleARN) {
				t.Errorf("message %q does not name the role", ie.Message)
			}
		})
	}
}

func TestAssumeRoleErrorMapping(t *testing.T) {
	tests := []struct {
		code    string
		status  int
		want    identity.Code
		retried bool
	}{
		{"AccessDenied", 403, identity.CodeAccessDenied, false},
		{"RegionDisabledException", 403, identity.CodeAccessDenied, false},
		{"Throttling", 400, identity.CodeThrottling, true},
		{"ThrottlingException", 400, identity.CodeThrottling, true},
		{"RequestLimitExceeded", 400, identity.CodeThrottling, true},
		{"MalformedPolicyDocument", 400, identity.CodeInvalidParameter, false},
		{"PackedPolicyTooLarge", 400, identity.CodeInvalidParameter, false},
		{"ValidationError", 400, identity.CodeInvalidParameter, false},
		{"InvalidParameterValue", 400, identity.CodeInvalidParameter, false},
		{"ExpiredTokenException", 400, identity.CodeInternal, false},
		{"InvalidClientTokenId", 403, identity.CodeInternal, false},
		{"SignatureDoesNotMatch", 403, identity.CodeInternal, false},
		{"InternalFailure", 500, identity.CodeServiceUnavailable, true},
		{"ServiceUnavailable", 503, identity.CodeServiceUnavailable, true},
		{"SomethingNew", 400, identity.CodeInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			srv := newServer(t)
			iss := newIssuer(t, srv)
			const msg = "injected message for the operator"
			srv.FailNextN(sts.DefaultMaxAttempts, tt.code, tt.status, msg)

			got, err := iss.AssumeRole(context.Background(), podInput())
			if err == nil {
				t.Fatalf("AssumeRole succeeded: %+v", got)
			}
			var ie *identity.Error
			if !errors.As(err, &ie) {
				t.Fatalf("error %T %v is not *identity.Error", err, err)
			}
			if ie.Code != tt.want {
				t.Errorf("code = %v, want %v (%v)", ie.Code, tt.want, err)
			}
			if !strings.Contains(ie.Message, roleARN) || !strings.Contains(ie.Message, msg) {
				t.Errorf("message %q should name the role and carry STS's message", ie.Message)
			}
			if tt.want == identity.CodeInternal && tt.code != "SomethingNew" && !strings.Contains(ie.Message, "server's AWS credentials") {
				t.Errorf("message %q should say the server's credentials were rejected", ie.Message)
			}
			wantCalls := 1
			if tt.retried {
				wantCalls = sts.DefaultMaxAttempts
			}
			if n := len(srv.Calls()); n != wantCalls {
				t.Errorf("%d STS calls, want %d", n, wantCalls)
			}
		})
	}
}

func TestAssumeRoleRetriesOnceThenSucceeds(t *testing.T) {
	srv := newServer(t)
	iss := newIssuer(t, srv)
	srv.FailNext("Throttling", 400, "Rate exceeded")

	got, err := iss.AssumeRole(context.Background(), podInput())
	if err != nil {
		t.Fatal(err)
	}
	calls := srv.Calls()
	if len(calls) != 2 || calls[0].ErrorCode != "Throttling" || calls[1].ErrorCode != "" {
		t.Fatalf("calls = %+v, want one throttled then one success", calls)
	}
	if got.RequestID != calls[1].RequestID {
		t.Errorf("RequestID = %q, want the successful attempt's %q", got.RequestID, calls[1].RequestID)
	}
}

func TestAssumeRoleDenied(t *testing.T) {
	t.Run("first role", func(t *testing.T) {
		srv := newServer(t)
		srv.DenyRole(roleARN)
		_, err := newIssuer(t, srv).AssumeRole(context.Background(), podInput())
		if got := identity.CodeOf(err); got != identity.CodeAccessDenied {
			t.Fatalf("code = %v, want CodeAccessDenied (%v)", got, err)
		}
		if !strings.Contains(err.Error(), "is not authorized to perform: sts:AssumeRole on resource: "+roleARN) {
			t.Errorf("error %q does not carry STS's message", err)
		}
	})
	t.Run("target role", func(t *testing.T) {
		srv := newServer(t)
		srv.DenyRole(targetARN)
		in := podInput()
		in.TargetRoleARN = targetARN
		_, err := newIssuer(t, srv).AssumeRole(context.Background(), in)
		var ie *identity.Error
		if !errors.As(err, &ie) || ie.Code != identity.CodeAccessDenied {
			t.Fatalf("err = %v, want CodeAccessDenied", err)
		}
		// The target's trust policy must trust the first role, so the
		// message names both.
		if !strings.Contains(ie.Message, targetARN) || !strings.Contains(ie.Message, "role "+roleARN) {
			t.Errorf("message %q should name the target and the first role", ie.Message)
		}
	})
}

func TestAssumeRoleWrongServerCredentials(t *testing.T) {
	srv := newServer(t)
	tests := []struct {
		name  string
		creds aws.CredentialsProvider
	}{
		{"wrong secret", credentials.NewStaticCredentialsProvider(ststest.BaseAccessKeyID, "not-the-secret", "")},
		{"unknown key", credentials.NewStaticCredentialsProvider("AKIAUNKNOWNKEY000000", "secret", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := newIssuer(t, srv, func(c *sts.Config) { c.Credentials = tt.creds })
			_, err := iss.AssumeRole(context.Background(), podInput())
			var ie *identity.Error
			if !errors.As(err, &ie) || ie.Code != identity.CodeInternal {
				t.Fatalf("err = %v, want CodeInternal", err)
			}
			if !strings.Contains(ie.Message, "server's AWS credentials") {
				t.Errorf("message %q should say the server's credentials were rejected", ie.Message)
			}
		})
	}
}

func TestAssumeRoleUnavailable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		srv := newServer(t)
		iss := newIssuer(t, srv, func(c *sts.Config) { c.Endpoint = "http://" + addr })
		_, err = iss.AssumeRole(context.Background(), podInput())
		if got := identity.CodeOf(err); got != identity.CodeServiceUnavailable {
			t.Errorf("code = %v, want CodeServiceUnavailable (%v)", got, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(hang.Close)
		t.Cleanup(func() { close(release) })
		srv := newServer(t)
		iss := newIssuer(t, srv, func(c *sts.Config) { c.Endpoint = hang.URL; c.Timeout = 50 * time.Millisecond })
		_, err := iss.AssumeRole(context.Background(), podInput())
		if got := identity.CodeOf(err); got != identity.CodeServiceUnavailable {
			t.Errorf("code = %v, want CodeServiceUnavailable (%v)", got, err)
		}
	})
}

func TestDefaultCredentialChain(t *testing.T) {
	srv := newServer(t)
	c, err := srv.Credentials().Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", c.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", c.SecretAccessKey)
	iss := newIssuer(t, srv, func(c *sts.Config) { c.Credentials = nil })
	if _, err := iss.AssumeRole(context.Background(), podInput()); err != nil {
		t.Fatalf("AssumeRole with environment credentials: %v", err)
	}
	if got := srv.Calls()[0].CallerAccessKeyID; got != ststest.BaseAccessKeyID {
		t.Errorf("signed by %q", got)
	}
}

func BenchmarkAssumeRole(b *testing.B) {
	srv := ststest.New(b)
	iss := newIssuer(b, srv)
	in := podInput()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.AssumeRole(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}
