package identity

import (
	"encoding/json"
	"regexp"
	"strings"
	"unicode/utf8"
)

var (
	clusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9\-_]*$`)
	// A Kubernetes namespace is an RFC 1123 label.
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// A service account name is an RFC 1123 subdomain.
	serviceAccountRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	roleARNRE        = regexp.MustCompile(`^arn:aws(-cn|-us-gov|-iso|-iso-b|-iso-e|-iso-f|-eusc)?:iam::[0-9]{12}:role/([\x21-\x7e]+/)?[\w+=,.@-]{1,64}$`)
	accountRE        = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE         = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	associationIDRE  = regexp.MustCompile(`^a-[a-z0-9]{17}$`)
	// STS's tag character set, which association tags share.
	tagRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

// ValidateClusterName checks a cluster name against the EKS pattern.
func ValidateClusterName(name string) error {
	switch {
	case name == "":
		return Errorf(CodeInvalidParameter, "clusterName is required")
	case len(name) > 100:
		return Errorf(CodeInvalidParameter, "clusterName must be at most 100 characters, got %d", len(name))
	case !clusterNameRE.MatchString(name):
		return Errorf(CodeInvalidParameter, "clusterName %q must start with a letter or digit and contain only letters, digits, '-' and '_'", name)
	}
	return nil
}

func validateNamespace(ns string) error {
	switch {
	case ns == "":
		return Errorf(CodeInvalidParameter, "namespace is required")
	case len(ns) > 63 || !namespaceRE.MatchString(ns):
		return Errorf(CodeInvalidParameter, "namespace %q is not a valid Kubernetes namespace name (lowercase letters, digits and '-', at most 63 characters)", truncate(ns))
	}
	return nil
}

func validateServiceAccount(sa string) error {
	switch {
	case sa == "":
		return Errorf(CodeInvalidParameter, "serviceAccount is required")
	case len(sa) > 253 || !serviceAccountRE.MatchString(sa):
		return Errorf(CodeInvalidParameter, "serviceAccount %q is not a valid Kubernetes service account name (lowercase letters, digits, '-' and '.', at most 253 characters)", truncate(sa))
	}
	return nil
}

func validateRoleARN(field, arn string) error {
	switch {
	case arn == "":
		return Errorf(CodeInvalidParameter, "%s is required", field)
	case len(arn) < 20 || len(arn) > 2048 || !roleARNRE.MatchString(arn):
		return Errorf(CodeInvalidParameter, "%s %q is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", field, truncate(arn))
	}
	return nil
}

func validateAssociationID(id string) error {
	if !associationIDRE.MatchString(id) {
		return Errorf(CodeInvalidParameter, "associationId %q is not valid: it is \"a-\" followed by 17 lowercase letters and digits", truncate(id))
	}
	return nil
}

func validateTags(tags map[string]string) error {
	if len(tags) > 50 {
		return Errorf(CodeInvalidParameter, "tags: at most 50 tags are allowed, got %d", len(tags))
	}
	for k, v := range tags {
		switch {
		case k == "" || utf8.RuneCountInString(k) > 128:
			return Errorf(CodeInvalidParameter, "tags: key %q must be 1 to 128 characters", truncate(k))
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return Errorf(CodeInvalidParameter, "tags: key %q uses the reserved prefix \"aws:\"", truncate(k))
		case !tagRE.MatchString(k):
			return Errorf(CodeInvalidParameter, "tags: key %q may contain only letters, digits, spaces and _.:/=+-@", truncate(k))
		case utf8.RuneCountInString(v) > 256:
			return Errorf(CodeInvalidParameter, "tags: value of %q must be at most 256 characters", truncate(k))
		case !tagRE.MatchString(v):
			return Errorf(CodeInvalidParameter, "tags: value of %q may contain only letters, digits, spaces and _.:/=+-@", truncate(k))
		}
	}
	return nil
}

func validatePolicy(policy string, disableSessionTags bool) error {
	if policy == "" {
		return nil
	}
	if !disableSessionTags {
		return Errorf(CodeInvalidParameter, "policy can only be set when disableSessionTags is true")
	}
	if len(policy) > 2048 {
		return Errorf(CodeInvalidParameter, "policy must be at most 2048 characters, got %d", len(policy))
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(policy), &doc); err != nil {
		return Errorf(CodeInvalidParameter, "policy is not a JSON policy document: %v", err)
	}
	return nil
}

func validateRequestToken(tok string) error {
	if len(tok) > 128 {
		return Errorf(CodeInvalidParameter, "clientRequestToken must be at most 128 characters, got %d", len(tok))
	}
	return nil
}

// truncate keeps messages short when echoing a long bad value.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
