package ststest

import (
	"net/url"
	"testing"
)

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc")
	f.Add("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=, Signature")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		a, err := parseAuthorization(v)
		if err == nil && (a.accessKeyID == "" && a.signature == "") {
			t.Errorf("accepted %q without key and signature", v)
		}
	})
}

// FuzzAssumeRoleParams feeds arbitrary form bodies through decoding and
// validation: no panics, and anything accepted satisfies the model.
func FuzzAssumeRoleParams(f *testing.F) {
	f.Add("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fa&RoleSessionName=ab&Tags.member.1.Key=k&Tags.member.1.Value=v&TransitiveTagKeys.member.1=k")
	f.Add("RoleArn=x&RoleSessionName=&DurationSeconds=-1&Policy=%7B&ExternalId=a")
	f.Add("Tags.member.99999999999999999999.Key=k&Tags.member.0.Key=x")
	base := &principal{accessKeyID: "AKIA", transitive: nil}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		in, err := parseAssumeRole(form)
		if err != nil {
			return
		}
		if _, err := validateAssumeRole(in, base); err != nil {
			return
		}
		if !roleARNPattern.MatchString(in.roleARN) || !roleSessionNamePattern.MatchString(in.sessionName) ||
			len(in.tags) > maxTags || (in.hasDuration && (in.durationSeconds < minDuration || in.durationSeconds > maxDuration)) {
			t.Errorf("accepted invalid input %+v", in)
		}
	})
}
