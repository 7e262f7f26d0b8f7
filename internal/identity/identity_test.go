package identity

import (
	"strings"
	"testing"
)

func TestSessionName(t *testing.T) {
	for _, tc := range []struct {
		cluster, pod, suffix, want string
	}{
		{"prod", "web-1", "abcd1234", "eks-prod-web-1-abcd1234"},
		// Long names are cut so the random suffix survives within 64.
		{"a-very-long-cluster-name-for-testing", "checkout-7d4b9c6f8d-x2x9q-extra-long", "abcd1234", "eks-a-very-long-cluster-name-for-testing-checkout-7d4b9-abcd1234"},
		// STS does not accept '/' or ':'; cluster names may carry '_'.
		{"my_cluster", "p:o/d", "zz", "eks-my_cluster-p-o-d-zz"},
	} {
		got := SessionName(tc.cluster, tc.pod, tc.suffix)
		if got != tc.want {
			t.Errorf("SessionName(%q, %q) = %q, want %q", tc.cluster, tc.pod, got, tc.want)
		}
		if len(got) > 64 || len(got) < 2 {
			t.Errorf("SessionName length %d out of STS bounds", len(got))
		}
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // "" = valid
	}{
		{"cluster ok", ValidateClusterName("prod_1-a"), ""},
		{"cluster empty", ValidateClusterName(""), "required"},
		{"cluster leading dash", ValidateClusterName("-a"), "clusterName"},
		{"cluster too long", ValidateClusterName(strings.Repeat("a", 101)), "100"},
		{"namespace ok", validateNamespace("kube-system"), ""},
		{"namespace upper", validateNamespace("Shop"), "namespace"},
		{"namespace dot", validateNamespace("a.b"), "namespace"},
		{"sa dotted ok", validateServiceAccount("app.v1"), ""},
		{"sa trailing dash", validateServiceAccount("app-"), "serviceAccount"},
		{"role ok", validateRoleARN("roleArn", "arn:aws:iam::123456789012:role/app"), ""},
		{"role with path ok", validateRoleARN("roleArn", "arn:aws:iam::123456789012:role/team/app"), ""},
		{"role china ok", validateRoleARN("roleArn", "arn:aws-cn:iam::123456789012:role/app"), ""},
		{"role short account", validateRoleARN("roleArn", "arn:aws:iam::1234:role/app"), "roleArn"},
		{"role user", validateRoleARN("roleArn", "arn:aws:iam::123456789012:user/app"), "roleArn"},
		{"tags ok", validateTags(map[string]string{"team": "a b", "cost:center": ""}), ""},
		{"tags reserved", validateTags(map[string]string{"aws:x": "a"}), "reserved"},
		{"tags bad char", validateTags(map[string]string{"a": "b;c"}), "value"},
		{"tags long key", validateTags(map[string]string{strings.Repeat("k", 129): "v"}), "128"},
		{"policy needs disableSessionTags", validatePolicy(`{}`, false), "disableSessionTags"},
		{"policy not json", validatePolicy(`{`, true), "JSON"},
		{"policy ok", validatePolicy(`{"Version":"2012-10-17"}`, true), ""},
		{"id ok", validateAssociationID("a-0123456789abcdefg"), ""},
		{"id upper", validateAssociationID("a-0123456789ABCDEFG"), "associationId"},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, tc.err)
		case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, tc.err, tc.want)
		case tc.err != nil && CodeOf(tc.err) != CodeInvalidParameter:
			t.Errorf("%s: code %v, want InvalidParameter", tc.name, CodeOf(tc.err))
		}
	}
}

func TestRandomStringIsUniformAlphabet(t *testing.T) {
	s := &Service{cfg: Config{Rand: strings.NewReader(strings.Repeat("\xff\x00\x01\xfc\x23", 100))}}
	got, err := s.randomString(17)
	if err != nil {
		t.Fatal(err)
	}
	// 0xff and 0xfc (>= 252) are rejected; 0x00→a, 0x01→b, 0x23=35→9.
	if got != "ab9ab9ab9ab9ab9ab" {
		t.Errorf("randomString = %q", got)
	}
	if _, err := (&Service{cfg: Config{Rand: strings.NewReader("")}}).randomString(3); err == nil {
		t.Error("an exhausted random source gave no error")
	}
}
