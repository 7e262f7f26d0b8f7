package ststest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

const (
	amzDateFormat = "20060102T150405Z"
	// maxSkew is how far a request's X-Amz-Date may be from the server's
	// clock, as STS enforces it.
	maxSkew = 5 * time.Minute
)

func errSignature(msg string) *stsError {
	return &stsError{status: http.StatusForbidden, code: "SignatureDoesNotMatch", message: msg}
}

func errIncomplete(msg string) *stsError {
	return &stsError{status: http.StatusBadRequest, code: "IncompleteSignature", message: msg}
}

var errInvalidToken = &stsError{status: http.StatusForbidden, code: "InvalidClientTokenId",
	message: "The security token included in the request is invalid."}

// authHeader is a parsed SigV4 Authorization header.
type authHeader struct {
	accessKeyID   string
	date          string // yyyymmdd of the credential scope
	region        string
	service       string
	signedHeaders string
	signature     string
}

func parseAuthorization(v string) (authHeader, error) {
	const algo = "AWS4-HMAC-SHA256 "
	var a authHeader
	if !strings.HasPrefix(v, algo) {
		return a, errIncomplete("Authorization header requires the AWS4-HMAC-SHA256 algorithm.")
	}
	var credential string
	for _, part := range strings.Split(v[len(algo):], ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, errIncomplete("Authorization header is malformed.")
		}
		switch k {
		case "Credential":
			credential = val
		case "SignedHeaders":
			a.signedHeaders = val
		case "Signature":
			a.signature = val
		}
	}
	if credential == "" || a.signedHeaders == "" || a.signature == "" {
		return a, errIncomplete("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return a, errIncomplete("Credential should be scoped to a valid region, service and aws4_request.")
	}
	a.accessKeyID, a.date, a.region, a.service = scope[0], scope[1], scope[2], scope[3]
	return a, nil
}

// authenticate verifies the request's SigV4 signature and returns the caller.
// It re-signs a copy of the request, limited to the headers the client says
// it signed, with the SDK's own signer and the secret the server knows, then
// compares signatures in constant time.
func (s *Server) authenticate(r *http.Request, body []byte) (*principal, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil, &stsError{status: http.StatusForbidden, code: "MissingAuthenticationToken", message: "Request is missing Authentication Token"}
	}
	a, err := parseAuthorization(authz)
	if err != nil {
		return nil, err
	}
	if a.service != "sts" {
		return nil, errSignature("Credential should be scoped to correct service: 'sts'.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	signed, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, errIncomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	if a.date != signed.Format("20060102") {
		return nil, errSignature("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
	}
	now := s.now().UTC()
	if signed.Before(now.Add(-maxSkew)) {
		return nil, errSignature("Signature expired: " + amzDate + " is now earlier than " +
			now.Add(-maxSkew).Format(amzDateFormat) + " (" + now.Format(amzDateFormat) + " - 5 min.)")
	}
	if signed.After(now.Add(maxSkew)) {
		return nil, errSignature("Signature not yet current: " + amzDate + " is still later than " +
			now.Add(maxSkew).Format(amzDateFormat) + " (" + now.Format(amzDateFormat) + " + 5 min.)")
	}

	s.mu.Lock()
	p := s.keys[a.accessKeyID]
	s.mu.Unlock()
	if p == nil {
		return nil, errInvalidToken
	}
	token := r.Header.Get("X-Amz-Security-Token")
	if subtle.ConstantTimeCompare([]byte(token), []byte(p.sessionToken)) != 1 {
		return nil, errInvalidToken
	}
	if p.isSession() && !now.Before(p.expires) {
		return nil, &stsError{status: http.StatusForbidden, code: "ExpiredToken", message: "The security token included in the request is expired"}
	}

	clone, err := signedCopy(r, a.signedHeaders)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: p.accessKeyID, SecretAccessKey: p.secret, SessionToken: p.sessionToken}
	if err := s.signer.SignHTTP(context.Background(), creds, clone, hex.EncodeToString(sum[:]), a.service, a.region, signed); err != nil {
		return nil, errSignature("cannot compute signature")
	}
	want, err := parseAuthorization(clone.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(want.signature), []byte(a.signature)) != 1 || want.signedHeaders != a.signedHeaders {
		return nil, errSignature("The request signature we calculated does not match the signature you provided. " +
			"Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return p, nil
}

// signedCopy builds the request the client signed: same method, path, query
// and host, and only the headers named in SignedHeaders. The Go server moves
// Host and Content-Length out of the header map, so they are put back where
// the signer looks for them.
func signedCopy(r *http.Request, signedHeaders string) (*http.Request, error) {
	u := *r.URL
	u.Scheme = "http"
	u.Host = r.Host
	clone, err := http.NewRequest(r.Method, u.String(), nil)
	if err != nil {
		return nil, errSignature("cannot rebuild the signed request")
	}
	clone.URL.RawPath = r.URL.RawPath
	clone.URL.Path = r.URL.Path
	clone.Host = r.Host
	for _, name := range strings.Split(signedHeaders, ";") {
		switch name {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
		default:
			if vals := r.Header.Values(name); len(vals) > 0 {
				clone.Header[textproto.CanonicalMIMEHeaderKey(name)] = vals
			}
		}
	}
	return clone, nil
}
