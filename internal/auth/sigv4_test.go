package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

var (
	adminKey = Key{Name: "ops", AccessKeyID: "PODIDADMIN0000000001", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Scope: ScopeAdmin}
	agentKey = Key{Name: "node-agent", AccessKeyID: "PODIDAGENT0000000001", SecretAccessKey: "agentSecret0123456789+/abcdefghijklmnopq", Scope: ScopeAgent, Clusters: []string{"prod"}}
)

func testKeyring(t testing.TB) *Keyring {
	t.Helper()
	kr, err := NewKeyring([]Key{adminKey, agentKey})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// signOpts describes one request signed by the SDK signer.
type signOpts struct {
	method  string
	url     string
	body    string
	headers http.Header
	service string
	region  string
	at      time.Time
	creds   aws.Credentials
	// payloadHash overrides the body's hash given to the signer.
	payloadHash string
}

func (o signOpts) withDefaults() signOpts {
	if o.method == "" {
		o.method = http.MethodGet
	}
	if o.service == "" {
		o.service = "eks"
	}
	if o.region == "" {
		o.region = "us-west-2"
	}
	if o.at.IsZero() {
		o.at = t0
	}
	if o.creds.AccessKeyID == "" {
		o.creds = aws.Credentials{AccessKeyID: adminKey.AccessKeyID, SecretAccessKey: adminKey.SecretAccessKey}
	}
	return o
}

// sign builds the request and signs it with aws-sdk-go-v2's SigV4 signer.
func sign(t testing.TB, o signOpts) *http.Request {
	t.Helper()
	o = o.withDefaults()
	var body io.Reader
	if o.body != "" {
		body = strings.NewReader(o.body)
	}
	r, err := http.NewRequest(o.method, o.url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range o.headers {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	hash := o.payloadHash
	if hash == "" {
		hash = sha256Hex(o.body)
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), o.creds, r, hash, o.service, o.region, o.at); err != nil {
		t.Fatal(err)
	}
	return r
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// wireResult is what the test server reports about a request it verified.
type wireResult struct {
	Principal *Principal
	Error     *Error
}

// newVerifyServer answers every request with the outcome of Verify, so
// requests are checked as they arrive over a real connection.
func newVerifyServer(t *testing.T, v *Verifier, service string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var res wireResult
		p, err := v.Verify(r, body, service)
		if err != nil {
			if !errors.As(err, &res.Error) {
				http.Error(w, "Verify returned a non-*Error: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		res.Principal = p
		json.NewEncoder(w).Encode(res)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// sendVia sends a signed request to srv and decodes the verdict.
func sendVia(t *testing.T, srv *httptest.Server, r *http.Request) wireResult {
	t.Helper()
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("server: %s: %s", resp.Status, b)
	}
	var res wireResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestVerifySDKSignedRequests(t *testing.T) {
	tests := []struct {
		name    string
		opts    signOpts
		mutate  func(r *http.Request) // applied after signing: must keep the request equivalent
		service string
		want    *Principal
	}{
		{
			name: "GET list with escaped token and space",
			opts: signOpts{url: "/clusters/prod/pod-identity-associations?nextToken=abc%2Bdef%3D&namespace=a b"},
			want: principalOf(adminKey),
		},
		{
			name: "GET list, query sent in a different but equivalent form",
			opts: signOpts{url: "/clusters/prod/pod-identity-associations?nextToken=abc%2Bdef%3D&namespace=a b"},
			mutate: func(r *http.Request) {
				r.URL.RawQuery = "nextToken=abc%2bdef%3d&namespace=a+b"
			},
			want: principalOf(adminKey),
		},
		{
			name: "GET with repeated keys, empty values and reserved characters",
			opts: signOpts{url: "/clusters/prod/pod-identity-associations?b=2&a=z&a=y&a=a%2Fb&a=a-b&c=%7E~&empty=&flag&uni=%C3%A9&slash=/x/&star=*&key%20x=1&key-x=2&key%2Fx=3&%2B=plus"},
			want: principalOf(adminKey),
		},
		{
			name: "path segments needing escaping are signed double-encoded",
			opts: signOpts{url: "/clusters/my%20cluster%2Fx/pod-identity-associations/a-0123456789abcdefg%3A%2B"},
			want: principalOf(adminKey),
		},
		{
			name: "POST JSON body",
			opts: signOpts{
				method:  http.MethodPost,
				url:     "/clusters/prod/pod-identity-associations",
				body:    `{"namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app"}`,
				headers: http.Header{"Content-Type": {"application/json"}},
			},
			want: principalOf(adminKey),
		},
		{
			name: "POST with matching X-Amz-Content-Sha256",
			opts: signOpts{
				method:  http.MethodPost,
				url:     "/clusters/prod/pod-identity-associations/a-1",
				body:    `{"roleArn":"arn:aws:iam::111122223333:role/x"}`,
				headers: http.Header{"Content-Type": {"application/json"}, "X-Amz-Content-Sha256": {sha256Hex(`{"roleArn":"arn:aws:iam::111122223333:role/x"}`)}},
			},
			want: principalOf(adminKey),
		},
		{
			name: "DELETE",
			opts: signOpts{method: http.MethodDelete, url: "/clusters/prod/pod-identity-associations/a-0123456789abcdefg"},
			want: principalOf(adminKey),
		},
		{
			name: "signed headers with runs of spaces and repeated values",
			opts: signOpts{
				method:  http.MethodPost,
				url:     "/v1/admin/clusters",
				body:    `{}`,
				headers: http.Header{"X-Podid-Note": {"  a   b  c ", "second   value"}, "Content-Type": {"application/x-amz-json-1.1"}},
			},
			want: principalOf(adminKey),
		},
		{
			name: "eks-auth AssumeRoleForPodIdentity by an agent",
			opts: signOpts{
				method:  http.MethodPost,
				url:     "/clusters/prod/assume-role-for-pod-identity",
				body:    `{"token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}`,
				headers: http.Header{"Content-Type": {"application/json"}},
				service: "eks-auth",
				creds:   aws.Credentials{AccessKeyID: agentKey.AccessKeyID, SecretAccessKey: agentKey.SecretAccessKey},
				region:  "eu-central-1",
			},
			service: "eks-auth",
			want:    principalOf(agentKey),
		},
	}
	for _, tt := range tests {
		service := tt.service
		if service == "" {
			service = "eks"
		}
		t.Run(tt.name, func(t *testing.T) {
			v := &Verifier{Keys: testKeyring(t), Now: fixedClock(t0)}
			srv := newVerifyServer(t, v, service)

			t.Run("direct", func(t *testing.T) {
				o := tt.opts
				o.url = "http://podid.example.com" + o.url
				r := sign(t, o)
				if tt.mutate != nil {
					tt.mutate(r)
				}
				p, err := v.Verify(r, []byte(tt.opts.body), service)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if diff := cmp.Diff(tt.want, p); diff != "" {
					t.Errorf("principal (-want +got):\n%s", diff)
				}
			})
			t.Run("over the wire", func(t *testing.T) {
				o := tt.opts
				o.url = srv.URL + o.url
				r := sign(t, o)
				if tt.mutate != nil {
					tt.mutate(r)
				}
				res := sendVia(t, srv, r)
				if res.Error != nil {
					t.Fatalf("Verify: %v", res.Error)
				}
				if diff := cmp.Diff(tt.want, res.Principal); diff != "" {
					t.Errorf("principal (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestVerifyAWSTestSuite checks vectors from AWS's published SigV4 test
// suite, which do not depend on the SDK signer agreeing with us.
func TestVerifyAWSTestSuite(t *testing.T) {
	// AKIDEXAMPLE is shorter than keyrings allow, so the keyring is built
	// by hand.
	key := Key{Name: "example", AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Scope: ScopeAdmin}
	kr := &Keyring{keys: []Key{key}, byID: map[string]int{key.AccessKeyID: 0}}
	v := &Verifier{Keys: kr, Now: fixedClock(time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC))}
	tests := []struct {
		name, target, signature string
	}{
		{"get-vanilla", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", "/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			r.Host = "example.amazonaws.com"
			r.Header.Set("X-Amz-Date", "20150830T123600Z")
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="+tt.signature)
			if _, err := v.Verify(r, nil, "service"); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestVerifyFailures(t *testing.T) {
	post := signOpts{
		method:  http.MethodPost,
		url:     "http://podid.example.com/clusters/prod/pod-identity-associations?x=1",
		body:    `{"namespace":"default"}`,
		headers: http.Header{"Content-Type": {"application/json"}},
	}
	replaceAuth := func(old, new string) func(r *http.Request, body *[]byte) {
		return func(r *http.Request, _ *[]byte) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), old, new, 1))
		}
	}
	tests := []struct {
		name    string
		opts    signOpts
		mutate  func(r *http.Request, body *[]byte)
		service string
		want    string // Error.Type
		msg     string // substring of Error.Message
	}{
		{name: "no Authorization header", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("Authorization") },
			want: ErrMissingAuthenticationToken, msg: "Missing Authentication Token"},
		{name: "empty Authorization header", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("Authorization", " ") },
			want: ErrMissingAuthenticationToken, msg: "Missing Authentication Token"},
		{name: "two Authorization headers", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Add("Authorization", r.Header.Get("Authorization")) },
			want: ErrIncompleteSignature},
		{name: "other algorithm", opts: post, mutate: replaceAuth("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
			want: ErrIncompleteSignature, msg: "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA1'"},
		{name: "bearer token", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("Authorization", "Bearer eyJhbGciOi.secret.token") },
			want: ErrIncompleteSignature},
		{name: "no Signature parameter", opts: post, mutate: func(r *http.Request, _ *[]byte) {
			h := r.Header.Get("Authorization")
			r.Header.Set("Authorization", h[:strings.Index(h, ", Signature=")])
		}, want: ErrIncompleteSignature, msg: "Authorization header requires 'Signature' parameter."},
		{name: "parameter without value", opts: post, mutate: replaceAuth("SignedHeaders=", "SignedHeaders"),
			want: ErrIncompleteSignature},
		{name: "duplicate parameter", opts: post, mutate: func(r *http.Request, _ *[]byte) {
			r.Header.Set("Authorization", r.Header.Get("Authorization")+", Signature=00")
		}, want: ErrIncompleteSignature},
		{name: "no X-Amz-Date", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("X-Amz-Date") },
			want: ErrIncompleteSignature, msg: "'X-Amz-Date'"},
		{name: "X-Amz-Date not ISO 8601 basic", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Amz-Date", "2024-05-01T12:00:00Z") },
			want: ErrIncompleteSignature, msg: "ISO8601"},
		{name: "host not signed", opts: post, mutate: func(r *http.Request, _ *[]byte) {
			h := r.Header.Get("Authorization")
			i := strings.Index(h, "SignedHeaders=") + len("SignedHeaders=")
			j := strings.Index(h, ", Signature=")
			r.Header.Set("Authorization", h[:i]+"content-type;x-amz-date"+h[j:])
		}, want: ErrIncompleteSignature, msg: "'Host'"},
		{name: "credential without scope", opts: post, mutate: replaceAuth("/20240501/us-west-2/eks/aws4_request", ""),
			want: ErrIncompleteSignature, msg: "Credential must have the form"},
		{name: "unknown access key", opts: signOpts{url: post.url, creds: aws.Credentials{AccessKeyID: "PODIDUNKNOWN00000001", SecretAccessKey: adminKey.SecretAccessKey}},
			want: ErrUnrecognizedClient, msg: "The security token included in the request is invalid."},
		{name: "session token", opts: signOpts{url: post.url, creds: aws.Credentials{AccessKeyID: adminKey.AccessKeyID, SecretAccessKey: adminKey.SecretAccessKey, SessionToken: "FwoGZXIvYXdzEXAMPLE"}},
			want: ErrUnrecognizedClient, msg: "The security token included in the request is invalid."},
		{name: "wrong service", opts: signOpts{url: post.url, service: "s3"},
			want: ErrInvalidSignature, msg: "Credential should be scoped to correct service: 'eks'."},
		{name: "eks signature sent to eks-auth", opts: signOpts{url: post.url}, service: "eks-auth",
			want: ErrInvalidSignature, msg: "'eks-auth'"},
		{name: "empty region", opts: post, mutate: replaceAuth("/us-west-2/", "//"),
			want: ErrInvalidSignature, msg: "valid region"},
		{name: "scope date differs from X-Amz-Date", opts: post, mutate: replaceAuth("/20240501/", "/20240430/"),
			want: ErrInvalidSignature, msg: "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20240430' != '20240501', from '20240501T120000Z'."},
		{name: "bad terminator", opts: post, mutate: replaceAuth("/aws4_request", "/aws5_request"),
			want: ErrInvalidSignature, msg: "valid terminator"},
		{name: "wrong secret", opts: signOpts{url: post.url, creds: aws.Credentials{AccessKeyID: adminKey.AccessKeyID, SecretAccessKey: agentKey.SecretAccessKey}},
			want: ErrInvalidSignature, msg: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."},
		{name: "body changed", opts: post, mutate: func(_ *http.Request, body *[]byte) { *body = []byte(`{"namespace":"kube-system"}`) },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "query changed", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.URL.RawQuery = "x=2" },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "query parameter added", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.URL.RawQuery += "&maxResults=1" },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "path changed", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.URL.Path = "/clusters/dev/pod-identity-associations" },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "path escaping changed", opts: signOpts{url: "http://podid.example.com/clusters/a%2Fb/x"}, mutate: func(r *http.Request, _ *[]byte) {
			r.URL.RawPath = "/clusters/a%2fb/x"
		}, want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "method changed", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Method = http.MethodPut },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "host changed", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Host = "evil.example.com" },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "signed header changed", opts: post, mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Type", "text/plain") },
			want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "signature changed", opts: post, mutate: func(r *http.Request, _ *[]byte) {
			h := r.Header.Get("Authorization")
			last := h[len(h)-1]
			r.Header.Set("Authorization", h[:len(h)-1]+map[bool]string{true: "1", false: "0"}[last == '0'])
		}, want: ErrInvalidSignature, msg: "does not match the signature"},
		{name: "X-Amz-Content-Sha256 vouches for another body", opts: signOpts{
			method: http.MethodPost, url: post.url, body: `{"a":1}`,
			headers:     http.Header{"X-Amz-Content-Sha256": {sha256Hex(`{"a":2}`)}},
			payloadHash: sha256Hex(`{"a":2}`),
		}, want: ErrInvalidSignature, msg: "'x-amz-content-sha256'"},
		{name: "unsigned payload", opts: signOpts{
			method: http.MethodPost, url: post.url, body: `{"a":1}`,
			headers:     http.Header{"X-Amz-Content-Sha256": {"UNSIGNED-PAYLOAD"}},
			payloadHash: "UNSIGNED-PAYLOAD",
		}, want: ErrInvalidSignature, msg: "'x-amz-content-sha256'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Verifier{Keys: testKeyring(t), Now: fixedClock(t0)}
			r := sign(t, tt.opts)
			body := []byte(tt.opts.body)
			if tt.mutate != nil {
				tt.mutate(r, &body)
			}
			service := tt.service
			if service == "" {
				service = "eks"
			}
			p, err := v.Verify(r, body, service)
			if err == nil {
				t.Fatalf("Verify = %+v, want %s", p, tt.want)
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("Verify error %T %v, want *Error", err, err)
			}
			if ae.Type != tt.want || !strings.Contains(ae.Message, tt.msg) {
				t.Errorf("Verify error = %s: %q, want %s containing %q", ae.Type, ae.Message, tt.want, tt.msg)
			}
			if ae.StatusCode() != http.StatusForbidden {
				t.Errorf("StatusCode = %d, want 403", ae.StatusCode())
			}
			for _, secret := range []string{adminKey.SecretAccessKey, agentKey.SecretAccessKey, "secret.token"} {
				if strings.Contains(ae.Error(), secret) {
					t.Errorf("error %q contains a secret", ae.Error())
				}
			}
		})
	}
}

func TestVerifyClockSkew(t *testing.T) {
	tests := []struct {
		name     string
		signedAt time.Time
		skew     time.Duration
		wantErr  string // exact message; "" means accepted
	}{
		{name: "now", signedAt: t0},
		{name: "5 min ago", signedAt: t0.Add(-5 * time.Minute)},
		{name: "5 min 1 s ago", signedAt: t0.Add(-5*time.Minute - time.Second),
			wantErr: "Signature expired: 20240501T115459Z is now earlier than 20240501T115500Z (20240501T120000Z - 5 min.)"},
		{name: "in 5 min", signedAt: t0.Add(5 * time.Minute)},
		{name: "in 5 min 1 s", signedAt: t0.Add(5*time.Minute + time.Second),
			wantErr: "Signature not yet current: 20240501T120501Z is still later than 20240501T120500Z (20240501T120000Z + 5 min.)"},
		{name: "custom skew", signedAt: t0.Add(-61 * time.Second), skew: time.Minute,
			wantErr: "Signature expired: 20240501T115859Z is now earlier than 20240501T115900Z (20240501T120000Z - 1 min.)"},
		{name: "yesterday, across the scope date", signedAt: t0.Add(-24 * time.Hour),
			wantErr: "Signature expired: 20240430T120000Z is now earlier than 20240501T115500Z (20240501T120000Z - 5 min.)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Verifier{Keys: testKeyring(t), Now: fixedClock(t0), MaxSkew: tt.skew}
			r := sign(t, signOpts{url: "http://podid.example.com/clusters/prod/pod-identity-associations", at: tt.signedAt})
			_, err := v.Verify(r, nil, "eks")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			want := &Error{Type: ErrInvalidSignature, Message: tt.wantErr}
			if diff := cmp.Diff(want, err); diff != "" {
				t.Errorf("Verify error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestVerifySigningKeyCache checks that a cached key is not reused for
// another secret, date or region, and that failures are not cached.
func TestVerifySigningKeyCache(t *testing.T) {
	v := &Verifier{Keys: testKeyring(t), Now: fixedClock(t0)}
	url := "http://podid.example.com/clusters/prod/pod-identity-associations"
	good := sign(t, signOpts{url: url})
	if _, err := v.Verify(good, nil, "eks"); err != nil {
		t.Fatal(err)
	}
	if len(v.keys) != 1 {
		t.Fatalf("cache holds %d keys after one success, want 1", len(v.keys))
	}
	bad := sign(t, signOpts{url: url, region: "xx-fake-1", creds: aws.Credentials{AccessKeyID: adminKey.AccessKeyID, SecretAccessKey: "not-the-secret-0123456789"}})
	if _, err := v.Verify(bad, nil, "eks"); err == nil {
		t.Fatal("Verify accepted a wrong secret")
	}
	if len(v.keys) != 1 {
		t.Errorf("cache holds %d keys after a failure, want 1", len(v.keys))
	}
	for i := range signingKeyCache + 10 {
		r := sign(t, signOpts{url: url, region: "region-" + string(rune('a'+i%26)) + string(rune('a'+i/26))})
		if _, err := v.Verify(r, nil, "eks"); err != nil {
			t.Fatal(err)
		}
		if len(v.keys) > signingKeyCache {
			t.Fatalf("cache grew to %d keys, bound is %d", len(v.keys), signingKeyCache)
		}
	}
	// A second verification with the cached key still works.
	if _, err := v.Verify(good, nil, "eks"); err != nil {
		t.Fatal(err)
	}
}

func TestCanonicalization(t *testing.T) {
	uriTests := []struct {
		rawURL string
		want   []string
	}{
		{"http://h", []string{"/"}},
		{"http://h/clusters/prod/pod-identity-associations", []string{"/clusters/prod/pod-identity-associations"}},
		{"http://h/clusters/my%20c%2Fx/a", []string{"/clusters/my%2520c%252Fx/a"}},
		{"http://h/a/./b/../c//d/", []string{"/a/./b/../c//d/", "/a/c/d/"}},
		{"http://h/~a-b_c.d", []string{"/~a-b_c.d"}},
	}
	for _, tt := range uriTests {
		r := httptest.NewRequest(http.MethodGet, tt.rawURL, nil)
		if diff := cmp.Diff(tt.want, canonicalURIs(r.URL)); diff != "" {
			t.Errorf("canonicalURIs(%q) (-want +got):\n%s", tt.rawURL, diff)
		}
	}
	queryTests := []struct{ raw, want string }{
		{"", ""},
		{"nextToken=abc%2Bdef%3D&namespace=a b", "namespace=a%20b&nextToken=abc%2Bdef%3D"},
		{"namespace=a+b", "namespace=a%20b"},
		// Sorted after encoding: "%2F" < "-".
		{"a=a-b&a=a/b", "a=a%2Fb&a=a-b"},
		{"flag&b=&a=~", "a=~&b=&flag="},
		{"bad=%zz&ok=1", "ok=1"},
		{"k-x=1&k%2Fx=2&k+x=3", "k%20x=3&k%2Fx=2&k-x=1"},
	}
	for _, tt := range queryTests {
		if got := canonicalQuery(tt.raw); got != tt.want {
			t.Errorf("canonicalQuery(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
	if got, want := trimHeaderValue("  a   b \t c  "), "a b \t c"; got != want {
		t.Errorf("trimHeaderValue = %q, want %q", got, want)
	}
}

func BenchmarkVerify(b *testing.B) {
	kr := testKeyring(b)
	v := &Verifier{Keys: kr, Now: fixedClock(t0)}
	body := `{"namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app","tags":{"team":"payments"}}`
	r := sign(b, signOpts{
		method:  http.MethodPost,
		url:     "http://podid.example.com/clusters/prod/pod-identity-associations",
		body:    body,
		headers: http.Header{"Content-Type": {"application/json"}},
	})
	bodyBytes := []byte(body)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, bodyBytes, "eks"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVerifyNilKeyring(t *testing.T) {
	v := &Verifier{Now: fixedClock(t0)}
	r := sign(t, signOpts{url: "http://podid.example.com/"})
	for _, v := range []*Verifier{v, nil} {
		_, err := v.Verify(r, nil, "eks")
		var ae *Error
		if !errors.As(err, &ae) || ae.Type != ErrUnrecognizedClient {
			t.Fatalf("Verify with no keyring = %v, want %s", err, ErrUnrecognizedClient)
		}
	}
}
