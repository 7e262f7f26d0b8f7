package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	algorithm        = "AWS4-HMAC-SHA256"
	scopeTerminator  = "aws4_request"
	amzDateFormat    = "20060102T150405Z"
	scopeDateFormat  = "20060102"
	defaultMaxSkew   = 5 * time.Minute
	signingKeyCache  = 256
	headerAmzDate    = "X-Amz-Date"
	headerAmzToken   = "X-Amz-Security-Token"
	headerContentSHA = "X-Amz-Content-Sha256"
)

// Verifier checks AWS Signature Version 4 Authorization headers against a
// keyring. Only header signing with static keys is supported: presigned URLs
// and session tokens are rejected. The zero value of Now and MaxSkew means
// time.Now and five minutes. A Verifier must not be copied after first use.
type Verifier struct {
	Keys *Keyring
	// Now is the clock; tests inject one.
	Now func() time.Time
	// MaxSkew is how far X-Amz-Date may be from Now either way (default 5m).
	MaxSkew time.Duration

	mu sync.Mutex
	// keys caches derived signing keys: deriving one is four HMACs, and a
	// client reuses its key for a whole UTC day.
	keys map[signingKeyID][]byte
}

type signingKeyID struct {
	secret, date, region, service string
}

// authorization is a parsed Authorization header.
type authorization struct {
	accessKeyID   string
	date          string // the credential scope's YYYYMMDD
	region        string
	service       string
	terminator    string
	signedHeaders string // as sent: it is part of the canonical request
	headers       []string
	signature     string
}

// Verify checks r's SigV4 Authorization header for the given signing name
// ("eks", "eks-auth") and returns the caller. body is the whole request body,
// already read by the caller (bounded); nil means empty. Every failure is an
// *Error whose Type is the AWS error name; the HTTP status is always 403.
func (v *Verifier) Verify(r *http.Request, body []byte, service string) (*Principal, error) {
	if r == nil || r.URL == nil {
		return nil, authError(ErrIncompleteSignature, "Request is missing its URL.")
	}
	values := r.Header.Values("Authorization")
	if len(values) == 0 || (len(values) == 1 && strings.TrimSpace(values[0]) == "") {
		return nil, authError(ErrMissingAuthenticationToken, "Missing Authentication Token")
	}
	if len(values) > 1 {
		return nil, authError(ErrIncompleteSignature, "Request must carry exactly one Authorization header.")
	}
	amzDate := r.Header.Get(headerAmzDate)
	a, err := parseAuthorization(values[0], amzDate != "")
	if err != nil {
		return nil, err
	}
	signedAt, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, authError(ErrIncompleteSignature, `X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'".`)
	}
	if !slices.ContainsFunc(a.headers, func(h string) bool { return strings.EqualFold(h, "host") }) {
		return nil, authError(ErrIncompleteSignature, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}

	// podid only issues static keys, so any session token is one we did not
	// issue.
	if len(r.Header.Values(headerAmzToken)) > 0 {
		return nil, authError(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if v == nil {
		return nil, authError(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	}
	key, ok := v.Keys.Lookup(a.accessKeyID)
	if !ok {
		return nil, authError(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	}

	if a.terminator != scopeTerminator {
		return nil, authError(ErrInvalidSignature, fmt.Sprintf("Credential should be scoped with a valid terminator: '%s', not '%s'.", scopeTerminator, clip(a.terminator)))
	}
	if a.date != amzDate[:8] {
		return nil, authError(ErrInvalidSignature, fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", clip(a.date), amzDate[:8], amzDate))
	}
	if a.region == "" {
		return nil, authError(ErrInvalidSignature, "Credential should be scoped to a valid region.")
	}
	if a.service != service {
		return nil, authError(ErrInvalidSignature, fmt.Sprintf("Credential should be scoped to correct service: '%s'. ", service))
	}
	if err := v.checkSkew(signedAt); err != nil {
		return nil, err
	}

	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if claimed := r.Header.Values(headerContentSHA); len(claimed) > 0 {
		// The header is what the client signed; it must describe the body we
		// got, or a signed header would vouch for an unsigned body.
		if len(claimed) != 1 || !hmac.Equal([]byte(strings.TrimSpace(claimed[0])), []byte(payloadHash)) {
			return nil, authError(ErrInvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
	}

	headers := canonicalHeaders(r, a.headers)
	query := canonicalQuery(r.URL.RawQuery)
	scope := a.date + "/" + a.region + "/" + a.service + "/" + scopeTerminator
	kid := signingKeyID{secret: key.SecretAccessKey, date: a.date, region: a.region, service: a.service}
	signingKey := v.signingKey(kid)

	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	for _, uri := range canonicalURIs(r.URL) {
		canonical := method + "\n" + uri + "\n" + query + "\n" + headers + "\n" + a.signedHeaders + "\n" + payloadHash
		crHash := sha256.Sum256([]byte(canonical))
		stringToSign := algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
		mac := hmac.New(sha256.New, signingKey)
		mac.Write([]byte(stringToSign))
		want := hex.EncodeToString(mac.Sum(nil))
		if hmac.Equal([]byte(want), []byte(a.signature)) {
			v.rememberSigningKey(kid, signingKey)
			return principalOf(key), nil
		}
	}
	return nil, authError(ErrInvalidSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
}

// parseAuthorization parses
//
//	AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request, SignedHeaders=a;b, Signature=<hex>
func parseAuthorization(h string, haveDate bool) (*authorization, error) {
	h = strings.TrimSpace(h)
	alg, rest, _ := strings.Cut(h, " ")
	if alg != algorithm {
		if isToken(alg) {
			return nil, authError(ErrIncompleteSignature, fmt.Sprintf("Unsupported AWS 'algorithm': '%s'. Only '%s' is supported.", alg, algorithm))
		}
		return nil, authError(ErrIncompleteSignature, fmt.Sprintf("Authorization header must start with '%s'.", algorithm))
	}
	var credential, signedHeaders, signature string
	var haveCred, haveSigned, haveSig bool
	for part := range strings.SplitSeq(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, authError(ErrIncompleteSignature, "Authorization header parameters must be name=value pairs separated by commas.")
		}
		var dst *string
		var seen *bool
		switch name {
		case "Credential":
			dst, seen = &credential, &haveCred
		case "SignedHeaders":
			dst, seen = &signedHeaders, &haveSigned
		case "Signature":
			dst, seen = &signature, &haveSig
		default:
			continue // AWS ignores parameters it does not know
		}
		if *seen {
			return nil, authError(ErrIncompleteSignature, fmt.Sprintf("Authorization header has more than one '%s' parameter.", name))
		}
		*dst, *seen = value, true
	}
	var missing []string
	if !haveCred || credential == "" {
		missing = append(missing, "Authorization header requires 'Credential' parameter.")
	}
	if !haveSig || signature == "" {
		missing = append(missing, "Authorization header requires 'Signature' parameter.")
	}
	if !haveSigned || signedHeaders == "" {
		missing = append(missing, "Authorization header requires 'SignedHeaders' parameter.")
	}
	if !haveDate {
		missing = append(missing, "Authorization header requires existence of a 'X-Amz-Date' header.")
	}
	if len(missing) > 0 {
		return nil, authError(ErrIncompleteSignature, strings.Join(missing, " "))
	}

	parts := strings.Split(credential, "/")
	if len(parts) != 5 || parts[0] == "" {
		return nil, authError(ErrIncompleteSignature, "Credential must have the form <AccessKeyId>/<YYYYMMDD>/<region>/<service>/aws4_request.")
	}
	a := &authorization{
		accessKeyID:   parts[0],
		date:          parts[1],
		region:        parts[2],
		service:       parts[3],
		terminator:    parts[4],
		signedHeaders: signedHeaders,
		signature:     signature,
		headers:       strings.Split(signedHeaders, ";"),
	}
	for _, name := range a.headers {
		if name == "" || !isToken(name) {
			return nil, authError(ErrIncompleteSignature, "SignedHeaders must be header names separated by ';'.")
		}
	}
	return a, nil
}

func (v *Verifier) checkSkew(signedAt time.Time) error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now().UTC()
	skew := v.MaxSkew
	if skew <= 0 {
		skew = defaultMaxSkew
	}
	minutes := skew.Round(time.Second).String()
	if skew%time.Minute == 0 {
		minutes = strconv.Itoa(int(skew/time.Minute)) + " min."
	}
	if earliest := t.Add(-skew); signedAt.Before(earliest) {
		return authError(ErrInvalidSignature, fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s)",
			signedAt.Format(amzDateFormat), earliest.Format(amzDateFormat), t.Format(amzDateFormat), minutes))
	}
	if latest := t.Add(skew); signedAt.After(latest) {
		return authError(ErrInvalidSignature, fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %s)",
			signedAt.Format(amzDateFormat), latest.Format(amzDateFormat), t.Format(amzDateFormat), minutes))
	}
	return nil
}

// signingKey returns the cached or freshly derived key
// HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request").
func (v *Verifier) signingKey(id signingKeyID) []byte {
	v.mu.Lock()
	k, ok := v.keys[id]
	v.mu.Unlock()
	if ok {
		return k
	}
	k = hmacSHA256([]byte("AWS4"+id.secret), id.date)
	k = hmacSHA256(k, id.region)
	k = hmacSHA256(k, id.service)
	return hmacSHA256(k, scopeTerminator)
}

// rememberSigningKey caches a key only once a signature made with it
// verified, so callers without the secret cannot churn the cache with made-up
// regions.
func (v *Verifier) rememberSigningKey(id signingKeyID, k []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.keys[id]; ok {
		return
	}
	if v.keys == nil || len(v.keys) >= signingKeyCache {
		// Keys roll over daily; starting afresh is simpler than LRU and
		// costs a few HMACs.
		v.keys = make(map[signingKeyID][]byte)
	}
	v.keys[id] = k
}

func hmacSHA256(key []byte, data string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(data))
	return mac.Sum(nil)
}

// canonicalURIs returns the canonical URI the AWS SDKs sign for non-S3
// services: the path as sent on the wire (already escaped once) URI-encoded
// again, so "%2F" becomes "%252F". The Go and Java SDKs sign the path as is;
// botocore and the JavaScript SDK first remove dot segments and empty
// segments, so that form is tried second when it differs.
func canonicalURIs(u *url.URL) []string {
	p := u.EscapedPath()
	if u.Opaque != "" {
		p = opaquePath(u.Opaque)
	}
	if p == "" {
		p = "/"
	}
	raw := uriEncode(p, false)
	if norm := uriEncode(removeDotSegments(p), false); norm != raw {
		return []string{raw, norm}
	}
	return []string{raw}
}

// opaquePath mirrors the SDK signer for URLs whose path is held in Opaque.
func opaquePath(opaque string) string {
	if i := strings.IndexByte(opaque, '?'); i >= 0 {
		opaque = opaque[:i]
	}
	opaque = strings.TrimPrefix(opaque, "//")
	if i := strings.IndexByte(opaque, '/'); i >= 0 {
		return opaque[i:]
	}
	return ""
}

func removeDotSegments(p string) string {
	var out []string
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	s := "/" + strings.Join(out, "/")
	if strings.HasSuffix(p, "/") && s != "/" {
		s += "/"
	}
	return s
}

// canonicalQuery decodes the query the way url.ParseQuery does ("+" is a
// space, malformed pairs dropped, as the SDK signer's URL.Query() does),
// encodes every name and value per RFC 3986 and sorts the encoded pairs by
// name, then value.
func canonicalQuery(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	values, _ := url.ParseQuery(rawQuery)
	type pair struct{ k, v string }
	pairs := make([]pair, 0, len(values))
	for k, vs := range values {
		ek := uriEncode(k, true)
		for _, v := range vs {
			pairs = append(pairs, pair{ek, uriEncode(v, true)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// canonicalHeaders renders the signed headers, in the order the client
// listed them, as "name:value\n" with values trimmed, runs of spaces
// collapsed and repeated headers joined by commas.
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, name := range names {
		lower := strings.ToLower(name)
		b.WriteString(lower)
		b.WriteByte(':')
		switch lower {
		case "host":
			// Go moves the Host header into r.Host.
			host := r.Host
			if host == "" {
				host = r.URL.Host
			}
			b.WriteString(trimHeaderValue(host))
		case "content-length":
			vs := r.Header.Values("Content-Length")
			if len(vs) == 0 && r.ContentLength > 0 {
				vs = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
			writeHeaderValues(&b, vs)
		default:
			writeHeaderValues(&b, r.Header.Values(name))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func writeHeaderValues(b *strings.Builder, vs []string) {
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(trimHeaderValue(v))
	}
}

// trimHeaderValue trims the value and collapses runs of spaces to one, as
// the SigV4 spec and the SDK signers do.
func trimHeaderValue(v string) string {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "  ") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	space := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

// uriEncode percent-encodes every byte but the RFC 3986 unreserved
// characters (and "/" unless encodeSlash), with uppercase hex.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) && (encodeSlash || s[i] != '/') {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) || (!encodeSlash && c == '/') {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return string(b)
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isToken reports whether s is a short run of header-name characters, safe
// to quote back in an error message.
func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(unreserved(c) || c == '!' || c == '#' || c == '$' || c == '&' || c == '\'' || c == '*' || c == '+' || c == '^' || c == '`' || c == '|') {
			return false
		}
	}
	return true
}

// clip makes a client-supplied value safe to quote back: short and
// printable.
func clip(s string) string {
	const maxLen = 32
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\'' {
			return '?'
		}
		return r
	}, s)
}
