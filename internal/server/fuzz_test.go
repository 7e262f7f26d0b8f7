package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/auth"
)

// FuzzAPIRequests sends arbitrary, correctly signed requests to every route:
// bodies, paths, query strings and nextTokens. Whatever the input, the
// answer is a JSON body in the AWS shape, never a 5xx and never a panic.
func FuzzAPIRequests(f *testing.F) {
	e := newEnv(f)
	e.registerFixtureClusters(f)
	id := e.createAssociation(f, "cluster-a", "shop", "checkout", nil)
	assoc := "/clusters/cluster-a/pod-identity-associations"
	for _, seed := range []struct {
		method, path, query, body string
	}{
		{"POST", assoc, "", `{"namespace":"a","serviceAccount":"b","roleArn":"arn:aws:iam::111122223333:role/x","tags":{"k":"v"}}`},
		{"POST", assoc, "", `{"namespace":"a","serviceAccount":"b","roleArn":"arn:aws:iam::111122223333:role/x","disableSessionTags":true,"policy":"{}","targetRoleArn":"arn:aws:iam::111122223333:role/y"}`},
		{"GET", assoc, "maxResults=1&nextToken=eyJhIjoiYS0wMDAwMDAwMDAwMDAwMDAwMCJ9", ""},
		{"GET", assoc, "namespace=shop&serviceAccount=checkout&maxResults=100", ""},
		{"GET", assoc + "/" + id, "", ""},
		{"POST", assoc + "/" + id, "", `{"roleArn":"arn:aws:iam::111122223333:role/z","targetRoleArn":""}`},
		{"DELETE", assoc + "/a-zzzzzzzzzzzzzzzzz", "", ""},
		{"POST", "/clusters/cluster-a/assume-role-for-pod-identity", "", `{"token":"` + fixture(f, "cluster-a/token-pod-bound.jwt") + `","eksNodeName":"node-1"}`},
		{"POST", "/clusters/cluster-a/assume-role-for-pod-identity", "", `{"token":"a.b.c"}`},
		{"POST", "/podid/v1/clusters", "", `{"name":"c","issuer":"https://c","keys":{"kind":"pem","pem":"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----"}}`},
		{"PUT", "/podid/v1/clusters/cluster-b", "", `{"issuer":"https://cluster-b.podid.test","keys":{"kind":"jwksURL","url":"https://127.0.0.1:1/jwks"}}`},
		{"GET", "/podid/v1/audit", "cluster=cluster-a&maxResults=2&nextToken=MTA", ""},
		// Found by fuzzing: unclean paths got ServeMux's bare redirect.
		{"POST", "/.", "", "0"},
		{"GET", "/clusters/cluster-a/../pod-identity-associations", "", ""},
	} {
		f.Add(seed.method, seed.path, seed.query, []byte(seed.body))
	}
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	key := e.keys[auth.ScopeAdmin]
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n?#") || len(path) > 2048 || len(query) > 2048 {
			return
		}
		valid := false
		for _, m := range methods {
			valid = valid || m == method
		}
		if !valid {
			return
		}
		if _, err := url.Parse("http://podid.test" + path); err != nil {
			return // not a request line any client can send
		}
		req := httptest.NewRequest(method, "http://podid.test"+path, bytes.NewReader(body))
		req.URL.RawQuery = query
		if err := api.SignRequest(context.Background(), req, creds(key), signingName(path), testRegion, body, time.Now()); err != nil {
			return
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			return
		}
		if rec.Code >= 500 && rec.Header().Get("X-Amzn-ErrorType") != "ServiceUnavailableException" {
			t.Fatalf("%s %s?%s: %d %s", method, path, query, rec.Code, rec.Body)
		}
		var eb api.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Type == "" || eb.Type != rec.Header().Get("X-Amzn-ErrorType") {
			t.Fatalf("%s %s: error body %q is not the AWS shape", method, path, rec.Body)
		}
	})
}

func signingName(path string) string {
	if strings.HasSuffix(path, "/assume-role-for-pod-identity") {
		return "eks-auth"
	}
	return "eks"
}
