package ststest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssts "github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/sts/ststest"
)

func TestMain(m *testing.M) {
	// Keep a developer's AWS environment (CA bundle, profile, endpoints)
	// out of the SDK clients these tests build.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

const (
	roleA = "arn:aws:iam::123456789012:role/first"
	roleB = "arn:aws:iam::123456789012:role/second"
	roleC = "arn:aws:iam::444455556666:role/third"
)

// clock is a settable clock for the fake STS.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newServer(t *testing.T) (*ststest.Server, *clock) {
	c := &clock{t: time.Now().UTC().Truncate(time.Second)}
	return ststest.New(t, ststest.WithClock(c.now)), c
}

func client(srv *ststest.Server, creds aws.CredentialsProvider) *awssts.Client {
	return awssts.New(awssts.Options{
		Region:       "eu-central-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  creds,
		// One attempt: these tests look at single answers.
		RetryMaxAttempts: 1,
	})
}

func baseCreds(t *testing.T, srv *ststest.Server) aws.Credentials {
	t.Helper()
	c, err := srv.Credentials().Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// signedRequest builds a raw STS POST signed with the SDK's signer.
func signedRequest(t *testing.T, srv *ststest.Server, creds aws.Credentials, body, service string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, "us-east-1", at); err != nil {
		t.Fatal(err)
	}
	return req
}

type errorResponse struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Error   struct {
		Type    string
		Code    string
		Message string
	}
	RequestID string `xml:"RequestId"`
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Result  struct {
		Credentials struct {
			AccessKeyID     string `xml:"AccessKeyId"`
			SecretAccessKey string
			SessionToken    string
			Expiration      string
		}
		AssumedRoleUser struct {
			Arn           string
			AssumedRoleID string `xml:"AssumedRoleId"`
		}
		PackedPolicySize int
	} `xml:"AssumeRoleResult"`
	Metadata struct {
		RequestID string `xml:"RequestId"`
	} `xml:"ResponseMetadata"`
}

func do(t *testing.T, req *http.Request) (int, []byte, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header.Get("X-Amzn-Requestid")
}

const assumeBody = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Ffirst&RoleSessionName=raw-session" +
	"&Tags.member.2.Key=team&Tags.member.2.Value=web&Tags.member.1.Key=env&Tags.member.1.Value=prod&TransitiveTagKeys.member.1=env&DurationSeconds=1800"

func TestRawRequestAccepted(t *testing.T) {
	srv, clk := newServer(t)
	req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", clk.t)
	// A header added after signing is not part of the signature.
	req.Header.Set("User-Agent", "raw-test")
	req.Header.Set("X-Unsigned", "anything")
	status, body, reqID := do(t, req)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var got assumeRoleResponse
	if err := xml.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	r := got.Result
	if got.Metadata.RequestID != reqID || reqID == "" {
		t.Errorf("RequestId %q, header %q", got.Metadata.RequestID, reqID)
	}
	// Shapes from the STS model.
	if !regexp.MustCompile(`^ASIA\w{12,124}$`).MatchString(r.Credentials.AccessKeyID) {
		t.Errorf("AccessKeyId %q does not match accessKeyIdType", r.Credentials.AccessKeyID)
	}
	if r.Credentials.SecretAccessKey == "" || r.Credentials.SessionToken == "" {
		t.Error("empty secret or session token")
	}
	exp, err := time.Parse(time.RFC3339, r.Credentials.Expiration)
	if err != nil || !exp.Equal(clk.t.Add(30*time.Minute)) {
		t.Errorf("Expiration %q (%v), want %v", r.Credentials.Expiration, err, clk.t.Add(30*time.Minute))
	}
	if want := "arn:aws:sts::123456789012:assumed-role/first/raw-session"; r.AssumedRoleUser.Arn != want {
		t.Errorf("Arn %q, want %q", r.AssumedRoleUser.Arn, want)
	}
	if !regexp.MustCompile(`^AROA[A-Z0-9]{17}:raw-session$`).MatchString(r.AssumedRoleUser.AssumedRoleID) {
		t.Errorf("AssumedRoleId %q", r.AssumedRoleUser.AssumedRoleID)
	}
	if r.PackedPolicySize < 1 || r.PackedPolicySize > 100 {
		t.Errorf("PackedPolicySize %d", r.PackedPolicySize)
	}

	calls := srv.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	// Query-protocol list members are ordered by their index, not by their
	// position in the body.
	wantTags := []identity.Tag{{Key: "env", Value: "prod"}, {Key: "team", Value: "web"}}
	if diff := cmp.Diff(wantTags, calls[0].Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"env"}, calls[0].TransitiveTagKeys); diff != "" {
		t.Errorf("transitive keys (-want +got):\n%s", diff)
	}
	if calls[0].DurationSeconds != 1800 || calls[0].RequestID != reqID {
		t.Errorf("call = %+v", calls[0])
	}
}

func TestSignatureRejected(t *testing.T) {
	tests := []struct {
		name       string
		req        func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{
			name: "tampered body",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now)
				// Same length, so only the body hash can tell.
				tampered := strings.Replace(assumeBody, "role%2Ffirst", "role%2Fadmin", 1)
				req.Body = io.NopCloser(strings.NewReader(tampered))
				return req
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "does not match",
		},
		{
			name: "tampered signed header",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				return req
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch",
		},
		{
			name: "wrong secret",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				c := baseCreds(t, srv)
				c.SecretAccessKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
				return signedRequest(t, srv, c, assumeBody, "sts", now)
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch",
		},
		{
			name: "date six minutes old",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				return signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now.Add(-6*time.Minute))
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "Signature expired",
		},
		{
			name: "date six minutes ahead",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				return signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now.Add(6*time.Minute))
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "not yet current",
		},
		{
			name: "X-Amz-Date changed after signing",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now)
				req.Header.Set("X-Amz-Date", now.Add(time.Second).Format("20060102T150405Z"))
				return req
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch",
		},
		{
			name: "signed for another service",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				return signedRequest(t, srv, baseCreds(t, srv), assumeBody, "iam", now)
			},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "'sts'",
		},
		{
			name: "unknown access key",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				c := baseCreds(t, srv)
				c.AccessKeyID = "AKIAIOSFODNN7EXAMPLE"
				return signedRequest(t, srv, c, assumeBody, "sts", now)
			},
			wantStatus: 403, wantCode: "InvalidClientTokenId",
		},
		{
			name: "base key with a session token",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				c := baseCreds(t, srv)
				c.SessionToken = "made-up"
				return signedRequest(t, srv, c, assumeBody, "sts", now)
			},
			wantStatus: 403, wantCode: "InvalidClientTokenId",
		},
		{
			name: "no Authorization",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now)
				req.Header.Del("Authorization")
				return req
			},
			wantStatus: 403, wantCode: "MissingAuthenticationToken",
		},
		{
			name: "malformed Authorization",
			req: func(t *testing.T, srv *ststest.Server, now time.Time) *http.Request {
				req := signedRequest(t, srv, baseCreds(t, srv), assumeBody, "sts", now)
				req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIA/x")
				return req
			},
			wantStatus: 400, wantCode: "IncompleteSignature",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, clk := newServer(t)
			status, body, reqID := do(t, tt.req(t, srv, clk.t))
			if status != tt.wantStatus {
				t.Errorf("status %d, want %d", status, tt.wantStatus)
			}
			var got errorResponse
			if err := xml.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if got.Error.Code != tt.wantCode || got.Error.Type != "Sender" || got.RequestID != reqID {
				t.Errorf("error = %+v, want code %s, type Sender, request id %s", got, tt.wantCode, reqID)
			}
			if !strings.Contains(got.Error.Message, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", got.Error.Message, tt.wantMsg)
			}
			if n := len(srv.Calls()); n != 0 {
				t.Errorf("an unauthenticated request was recorded (%d calls)", n)
			}
		})
	}
}

func TestSDKWithWrongCredentials(t *testing.T) {
	srv, _ := newServer(t)
	tests := []struct {
		name  string
		creds aws.CredentialsProvider
		want  string
	}{
		{"wrong secret", credentials.NewStaticCredentialsProvider(ststest.BaseAccessKeyID, "not-the-secret", ""), "SignatureDoesNotMatch"},
		{"unknown key", credentials.NewStaticCredentialsProvider("AKIAUNKNOWN000000000", "secret", ""), "InvalidClientTokenId"},
		{"right keys", srv.Credentials(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client(srv, tt.creds).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{})
			if got := apiCode(err); got != tt.want {
				t.Errorf("error code %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}

// assume calls AssumeRole through the SDK and returns the session's
// credentials.
func assume(t *testing.T, srv *ststest.Server, creds aws.CredentialsProvider, in *awssts.AssumeRoleInput) (aws.CredentialsProvider, error) {
	t.Helper()
	out, err := client(srv, creds).AssumeRole(context.Background(), in)
	if err != nil {
		return nil, err
	}
	c := out.Credentials
	return credentials.NewStaticCredentialsProvider(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken), nil
}

func tag(k, v string) types.Tag { return types.Tag{Key: aws.String(k), Value: aws.String(v)} }

func TestRoleChaining(t *testing.T) {
	srv, _ := newServer(t)
	first, err := assume(t, srv, srv.Credentials(), &awssts.AssumeRoleInput{
		RoleArn:           aws.String(roleA),
		RoleSessionName:   aws.String("s1"),
		Tags:              []types.Tag{tag("Cluster", "prod"), tag("Pod", "web-1")},
		TransitiveTagKeys: []string{"Cluster"},
		DurationSeconds:   aws.Int32(6 * 3600),
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		in       *awssts.AssumeRoleInput
		wantCode string
	}{
		{"duration over an hour", &awssts.AssumeRoleInput{DurationSeconds: aws.Int32(3601)}, "ValidationError"},
		{"duration one hour", &awssts.AssumeRoleInput{DurationSeconds: aws.Int32(3600)}, ""},
		{"no duration", &awssts.AssumeRoleInput{}, ""},
		{"re-set transitive tag", &awssts.AssumeRoleInput{Tags: []types.Tag{tag("Cluster", "other")}}, "InvalidParameterValue"},
		{"re-set transitive tag other case", &awssts.AssumeRoleInput{Tags: []types.Tag{tag("cluster", "prod")}}, "InvalidParameterValue"},
		{"re-set non-transitive tag", &awssts.AssumeRoleInput{Tags: []types.Tag{tag("Pod", "web-2")}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.RoleArn = aws.String(roleB)
			tt.in.RoleSessionName = aws.String("s2")
			_, err := assume(t, srv, first, tt.in)
			if got := apiCode(err); got != tt.wantCode {
				t.Errorf("error code %q, want %q (%v)", got, tt.wantCode, err)
			}
		})
	}

	// Transitive tags travel the whole chain; non-transitive ones stop.
	second, err := assume(t, srv, first, &awssts.AssumeRoleInput{
		RoleArn: aws.String(roleB), RoleSessionName: aws.String("s2"),
		Tags: []types.Tag{tag("Hop", "2")}, TransitiveTagKeys: []string{"Hop"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assume(t, srv, second, &awssts.AssumeRoleInput{RoleArn: aws.String(roleC), RoleSessionName: aws.String("s3")}); err != nil {
		t.Fatal(err)
	}
	calls := srv.Calls()
	last := calls[len(calls)-1]
	want := []identity.Tag{{Key: "Cluster", Value: "prod"}, {Key: "Hop", Value: "2"}}
	if diff := cmp.Diff(want, last.EffectiveTags); diff != "" {
		t.Errorf("third session's tags (-want +got):\n%s", diff)
	}
	if !last.Chained || last.CallerARN != "arn:aws:sts::123456789012:assumed-role/second/s2" {
		t.Errorf("third call = %+v", last)
	}
}

func TestSessionCredentials(t *testing.T) {
	srv, clk := newServer(t)
	sess, err := assume(t, srv, srv.Credentials(), &awssts.AssumeRoleInput{
		RoleArn: aws.String(roleA), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(900),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := sess.Retrieve(context.Background())

	out, err := client(srv, sess).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(out.Arn), "arn:aws:sts::123456789012:assumed-role/first/s1"; got != want {
		t.Errorf("Arn %q, want %q", got, want)
	}
	if aws.ToString(out.Account) != "123456789012" || !strings.HasSuffix(aws.ToString(out.UserId), ":s1") {
		t.Errorf("identity = %+v", out)
	}

	noToken := credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
	if _, err := client(srv, noToken).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{}); apiCode(err) != "InvalidClientTokenId" {
		t.Errorf("session key without its token: %v, want InvalidClientTokenId", err)
	}
	wrongToken := credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken+"x")
	if _, err := client(srv, wrongToken).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{}); apiCode(err) != "InvalidClientTokenId" {
		t.Errorf("session key with a wrong token: %v, want InvalidClientTokenId", err)
	}

	// Later within the session's 15 minutes it still works. (The SDK signs
	// with the wall clock, so the server's clock may move less than the
	// five minutes a signature stays fresh.)
	clk.t = clk.t.Add(4 * time.Minute)
	if _, err := client(srv, sess).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("session still valid: %v", err)
	}
}

func TestExpiredSession(t *testing.T) {
	srv, clk := newServer(t)
	sess, err := assume(t, srv, srv.Credentials(), &awssts.AssumeRoleInput{
		RoleArn: aws.String(roleA), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(900),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := sess.Retrieve(context.Background())
	// Sign a raw request at the server's future time, so the signature is
	// fresh but the session is over.
	clk.t = clk.t.Add(15 * time.Minute)
	req := signedRequest(t, srv, c, "Action=GetCallerIdentity&Version=2011-06-15", "sts", clk.t)
	status, body, _ := do(t, req)
	var got errorResponse
	if err := xml.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if status != 403 || got.Error.Code != "ExpiredToken" {
		t.Errorf("status %d, error %+v; want 403 ExpiredToken", status, got.Error)
	}
}

func TestGetCallerIdentityBase(t *testing.T) {
	srv, _ := newServer(t)
	out, err := client(srv, srv.Credentials()).GetCallerIdentity(context.Background(), &awssts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Account) != ststest.DefaultAccount ||
		aws.ToString(out.Arn) != "arn:aws:iam::"+ststest.DefaultAccount+":user/podid-test" ||
		!strings.HasPrefix(aws.ToString(out.UserId), "AIDA") {
		t.Errorf("identity = %s %s %s", aws.ToString(out.Account), aws.ToString(out.Arn), aws.ToString(out.UserId))
	}
}

func TestFailNextAndDenyRole(t *testing.T) {
	srv, _ := newServer(t)
	c := client(srv, srv.Credentials())
	in := &awssts.AssumeRoleInput{RoleArn: aws.String(roleA), RoleSessionName: aws.String("s1")}

	srv.FailNext("InternalFailure", 500, "boom")
	_, err := c.AssumeRole(context.Background(), in)
	if apiCode(err) != "InternalFailure" {
		t.Fatalf("err = %v, want InternalFailure", err)
	}
	if _, err := c.AssumeRole(context.Background(), in); err != nil {
		t.Fatalf("FailNext should fail one request only: %v", err)
	}

	// Typed model errors decode as the SDK's types.
	srv.FailNext("MalformedPolicyDocument", 400, "bad policy")
	_, err = c.AssumeRole(context.Background(), in)
	var mpd *types.MalformedPolicyDocumentException
	if !errors.As(err, &mpd) || mpd.ErrorMessage() != "bad policy" {
		t.Errorf("err = %v, want *types.MalformedPolicyDocumentException", err)
	}

	srv.DenyRole(roleA)
	_, err = c.AssumeRole(context.Background(), in)
	if apiCode(err) != "AccessDenied" || !strings.Contains(err.Error(), "not authorized to perform: sts:AssumeRole on resource: "+roleA) {
		t.Errorf("err = %v, want AccessDenied naming the role", err)
	}
	// Other roles are unaffected.
	if _, err := c.AssumeRole(context.Background(), &awssts.AssumeRoleInput{RoleArn: aws.String(roleB), RoleSessionName: aws.String("s1")}); err != nil {
		t.Errorf("other role: %v", err)
	}

	var codes []string
	for _, call := range srv.Calls() {
		codes = append(codes, call.ErrorCode)
	}
	if diff := cmp.Diff([]string{"InternalFailure", "", "MalformedPolicyDocument", "AccessDenied", ""}, codes); diff != "" {
		t.Errorf("recorded error codes (-want +got):\n%s", diff)
	}
}

func TestMaxSessionDuration(t *testing.T) {
	srv, _ := newServer(t)
	srv.SetMaxSessionDuration(roleA, time.Hour)
	c := client(srv, srv.Credentials())
	for d, want := range map[int32]string{3600: "", 3601: "ValidationError"} {
		_, err := c.AssumeRole(context.Background(), &awssts.AssumeRoleInput{
			RoleArn: aws.String(roleA), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(d),
		})
		if got := apiCode(err); got != want {
			t.Errorf("DurationSeconds %d: %q, want %q", d, got, want)
		}
	}
}

func TestQueryProtocolErrors(t *testing.T) {
	tests := []struct {
		name, body, wantCode string
	}{
		{"missing tag value", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(roleA) + "&RoleSessionName=abc&Tags.member.1.Key=k", "ValidationError"},
		{"missing role", "Action=AssumeRole&Version=2011-06-15&RoleSessionName=abc", "ValidationError"},
		{"duration not a number", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(roleA) + "&RoleSessionName=abc&DurationSeconds=1h", "ValidationError"},
		{"wrong version", "Action=AssumeRole&Version=2011-06-16", "InvalidAction"},
		{"unknown action", "Action=GetSessionToken&Version=2011-06-15", "InvalidAction"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, clk := newServer(t)
			status, body, _ := do(t, signedRequest(t, srv, baseCreds(t, srv), tt.body, "sts", clk.t))
			var got errorResponse
			if err := xml.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if status != 400 || got.Error.Code != tt.wantCode {
				t.Errorf("status %d, error %+v; want 400 %s", status, got.Error, tt.wantCode)
			}
		})
	}
}
