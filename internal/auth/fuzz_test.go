package auth

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// FuzzVerify feeds raw HTTP requests, as a server would parse them, to
// Verify. It must never panic, must only fail with *Error, and may only
// accept a request that names the accepted key.
func FuzzVerify(f *testing.F) {
	seeds := []*http.Request{
		sign(f, signOpts{url: "http://podid.example.com/clusters/prod/pod-identity-associations?nextToken=abc%2Bdef%3D&namespace=a b"}),
		sign(f, signOpts{
			method: http.MethodPost, url: "http://podid.example.com/clusters/my%20c/pod-identity-associations",
			body: `{"namespace":"default"}`, headers: http.Header{"Content-Type": {"application/json"}, "X-Amz-Content-Sha256": {sha256Hex(`{"namespace":"default"}`)}},
		}),
		sign(f, signOpts{method: http.MethodDelete, url: "http://podid.example.com/clusters/prod/pod-identity-associations/a-1", service: "eks-auth"}),
	}
	bodies := []string{"", `{"namespace":"default"}`, ""}
	var valid [][]byte
	for i, r := range seeds {
		if bodies[i] != "" {
			r.Body = io.NopCloser(bytes.NewReader([]byte(bodies[i])))
		}
		var buf bytes.Buffer
		if err := r.Write(&buf); err != nil {
			f.Fatal(err)
		}
		valid = append(valid, buf.Bytes())
		f.Add(buf.Bytes(), "eks")
		f.Add(buf.Bytes(), "eks-auth")
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=;;, Signature=\r\nX-Amz-Date: 20240501T120000Z\r\n\r\n"), "eks")
	f.Add([]byte("GET /%zz?%zz=%zz HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256\r\n\r\n"), "")
	f.Add([]byte("GET http://a/b HTTP/1.1\r\nHost:  a  b \r\nAuthorization: AWS4-HMAC-SHA256 Credential=PODIDADMIN0000000001/20240501/x/eks/aws4_request,SignedHeaders=host,Signature=00\r\nX-Amz-Date: 20240501T120000Z\r\n\r\n"), "eks")

	v := &Verifier{Keys: testKeyring(f), Now: fixedClock(t0)}
	verifyRaw := func(raw []byte, service string) (*Principal, bool, error) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return nil, false, nil
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			return nil, false, nil
		}
		p, err := v.Verify(r, body, service)
		return p, true, err
	}
	// The seeds are real signed requests in wire form: they must verify,
	// or the fuzzer would only ever explore the rejection paths.
	for i, raw := range valid {
		service := "eks"
		if i == 2 {
			service = "eks-auth"
		}
		if _, ok, err := verifyRaw(raw, service); !ok || err != nil {
			f.Fatalf("seed %d does not verify (parsed %v): %v", i, ok, err)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, service string) {
		p, ok, err := verifyRaw(raw, service)
		if !ok {
			return
		}
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("Verify returned %T %v, want *Error", err, err)
			}
			switch ae.Type {
			case ErrMissingAuthenticationToken, ErrIncompleteSignature, ErrUnrecognizedClient, ErrInvalidSignature:
			default:
				t.Fatalf("unknown error type %q", ae.Type)
			}
			return
		}
		if p == nil {
			t.Fatal("Verify returned neither a principal nor an error")
		}
		if !bytes.Contains(raw, []byte(p.AccessKeyID)) {
			t.Fatalf("accepted for %q, whose access key ID is not in the request:\n%q", p.AccessKeyID, raw)
		}
	})
}

// FuzzParseKeyring checks that any keyring file either fails to parse or
// yields keys that pass validation and can be looked up.
func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte(`{"keys":[{"name":"ops","accessKeyId":"PODIDAAAAAAAAAAAAAAA","secretAccessKey":"0123456789abcdefghijk","scope":"admin"}]}`))
	f.Add([]byte(`{"keys":[{"name":"a","accessKeyId":"PODIDAAAAAAAAAAAAAAA","secretAccessKey":"0123456789abcdefghijk","scope":"agent","clusters":["*"]}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kr, err := parseKeyring(data)
		if err != nil {
			return
		}
		for _, k := range kr.Keys() {
			if err := validateKey(k); err != nil {
				t.Fatalf("keyring holds an invalid key: %v", err)
			}
			if got, ok := kr.Lookup(k.AccessKeyID); !ok || got.Name != k.Name {
				t.Fatalf("Lookup(%q) = %v, %v", k.AccessKeyID, got, ok)
			}
		}
	})
}
