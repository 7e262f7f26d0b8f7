package identity

import (
	"strings"
	"testing"
)

func TestValidateKeySourceLiveCheck(t *testing.T) {
	const api = "https://10.0.0.1:6443"
	for _, tc := range []struct {
		name string
		k    KeySource
		want string // "" = valid
	}{
		{"tokenReview", KeySource{Kind: KeysTokenReview, URL: api, BearerToken: "t"}, ""},
		{"tokenReview with redundant liveCheck", KeySource{Kind: KeysTokenReview, URL: api, BearerToken: "t", LiveCheck: LiveCheckTokenReview}, ""},
		{"tokenReview without url", KeySource{Kind: KeysTokenReview, BearerToken: "t"}, "needs keys.url"},
		{"tokenReview without bearer token", KeySource{Kind: KeysTokenReview, URL: api}, "system:auth-delegator"},
		{"tokenReview with a bad url", KeySource{Kind: KeysTokenReview, URL: "10.0.0.1:6443", BearerToken: "t"}, "not an http(s) URL"},
		{"kubernetes with liveCheck", KeySource{Kind: KeysKubernetes, URL: api, BearerToken: "t", LiveCheck: LiveCheckTokenReview}, ""},
		{"kubernetes with liveCheck, no bearer token", KeySource{Kind: KeysKubernetes, URL: api, LiveCheck: LiveCheckTokenReview}, "keys.bearerToken"},
		{"jwks with liveCheck", KeySource{Kind: KeysJWKS, JWKS: "{}", URL: api, BearerToken: "t", LiveCheck: LiveCheckTokenReview}, ""},
		{"jwks with liveCheck, no url", KeySource{Kind: KeysJWKS, JWKS: "{}", BearerToken: "t", LiveCheck: LiveCheckTokenReview}, "needs keys.url"},
		{"pem with liveCheck", KeySource{Kind: KeysPEM, PEM: "x", URL: api, BearerToken: "t", LiveCheck: LiveCheckTokenReview}, ""},
		{"jwksURL with liveCheck", KeySource{Kind: KeysJWKSURL, URL: api, BearerToken: "t", LiveCheck: LiveCheckTokenReview}, "not the API server"},
		{"unknown liveCheck", KeySource{Kind: KeysJWKS, JWKS: "{}", LiveCheck: "always"}, `keys.liveCheck "always"`},
		{"unknown kind lists tokenReview", KeySource{Kind: "oidc"}, "tokenReview"},
		{"jwks without liveCheck needs no url", KeySource{Kind: KeysJWKS, JWKS: "{}"}, ""},
	} {
		err := validateKeySource(tc.k)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || CodeOf(err) != CodeInvalidParameter || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want InvalidParameter containing %q", tc.name, err, tc.want)
		}
	}
}
