package ststest

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/podid/podid/internal/identity"
)

// Patterns and limits from the STS model (sts-2011-06-15) and the IAM/STS
// character-limit documentation.
var (
	roleSessionNamePattern = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDPattern      = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	tagKeyPattern          = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	tagValuePattern        = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	policyPattern          = regexp.MustCompile(`^[\x{0009}\x{000A}\x{000D}\x{0020}-\x{00FF}]+$`)
	// roleARNPattern is an IAM role ARN, optionally with a path; the
	// assumed-role ARN carries only the last segment.
	roleARNPattern = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):iam::(\d{12}):role/((?:[\x{21}-\x{7E}]+/)?)([\w+=,.@-]{1,64})$`)
)

const (
	maxTags          = 50
	maxPolicyChars   = 2048
	minDuration      = 900
	maxDuration      = 43200
	maxChainDuration = 3600
)

// assumeRoleParams is an AssumeRole request decoded from the Query protocol.
type assumeRoleParams struct {
	roleARN         string
	sessionName     string
	tags            []identity.Tag
	transitive      []string
	externalID      string
	hasExternalID   bool
	policy          string
	hasPolicy       bool
	durationSeconds int
	hasDuration     bool
}

// parseAssumeRole decodes the parameters. It returns what it could decode
// together with an error for input that is not even well-formed.
func parseAssumeRole(p url.Values) (assumeRoleParams, error) {
	in := assumeRoleParams{
		roleARN:     p.Get("RoleArn"),
		sessionName: p.Get("RoleSessionName"),
		externalID:  p.Get("ExternalId"),
		policy:      p.Get("Policy"),
	}
	in.hasExternalID = p.Has("ExternalId")
	in.hasPolicy = p.Has("Policy")

	var errs []string
	if p.Has("DurationSeconds") {
		d, err := strconv.Atoi(p.Get("DurationSeconds"))
		if err != nil {
			errs = append(errs, fmt.Sprintf("Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must be an integer", p.Get("DurationSeconds")))
		} else {
			in.durationSeconds, in.hasDuration = d, true
		}
	}

	keys := members(p, "Tags.member.", ".Key")
	for _, n := range keys {
		prefix := "Tags.member." + strconv.Itoa(n)
		if !p.Has(prefix + ".Value") {
			errs = append(errs, fmt.Sprintf("Value null at 'tags.%d.member.value' failed to satisfy constraint: Member must not be null", n))
		}
		in.tags = append(in.tags, identity.Tag{Key: p.Get(prefix + ".Key"), Value: p.Get(prefix + ".Value")})
	}
	for _, n := range members(p, "TransitiveTagKeys.member.", "") {
		in.transitive = append(in.transitive, p.Get("TransitiveTagKeys.member."+strconv.Itoa(n)))
	}
	if len(errs) > 0 {
		return in, validationErrors(errs)
	}
	return in, nil
}

// members returns the indices N of parameters named prefix+N+suffix, in
// order. The Query protocol numbers list members from 1.
func members(p url.Values, prefix, suffix string) []int {
	var out []int
	for k := range p {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		rest, ok = strings.CutSuffix(rest, suffix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 1 {
			continue
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// roleInfo is what the server derives from a valid role ARN.
type roleInfo struct {
	partition string
	account   string
	name      string
	// uniqueID is the role's stable AROA… id, derived from its ARN.
	uniqueID string
}

// validationErrors joins constraint violations the way STS reports them.
func validationErrors(errs []string) *stsError {
	noun := "error"
	if len(errs) > 1 {
		noun = "errors"
	}
	return errValidation(fmt.Sprintf("%d validation %s detected: %s", len(errs), noun, strings.Join(errs, "; ")))
}

func lengthError(value, member string, min, max int) string {
	n := utf8.RuneCountInString(value)
	switch {
	case n < min:
		return fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", value, member, min)
	case max > 0 && n > max:
		return fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", value, member, max)
	}
	return ""
}

func patternError(value, member string, re *regexp.Regexp) string {
	if re.MatchString(value) {
		return ""
	}
	return fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", value, member, re.String())
}

// validateAssumeRole applies the model's constraints first (all reported at
// once, as STS does), then STS's semantic rules one at a time.
func validateAssumeRole(in assumeRoleParams, caller *principal) (roleInfo, error) {
	var errs []string
	add := func(s string) {
		if s != "" {
			errs = append(errs, s)
		}
	}
	if in.roleARN == "" {
		add("Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
	} else {
		add(lengthError(in.roleARN, "roleArn", 20, 2048))
	}
	if in.sessionName == "" {
		add("Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null")
	} else {
		add(lengthError(in.sessionName, "roleSessionName", 2, 64))
		add(patternError(in.sessionName, "roleSessionName", roleSessionNamePattern))
	}
	if len(in.tags) > maxTags {
		add(fmt.Sprintf("Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to %d", maxTags))
	}
	for i, t := range in.tags {
		member := fmt.Sprintf("tags.%d.member.", i+1)
		add(lengthError(t.Key, member+"key", 1, 128))
		if t.Key != "" {
			add(patternError(t.Key, member+"key", tagKeyPattern))
		}
		add(lengthError(t.Value, member+"value", 0, 256))
		add(patternError(t.Value, member+"value", tagValuePattern))
	}
	if len(in.transitive) > maxTags {
		add(fmt.Sprintf("Value at 'transitiveTagKeys' failed to satisfy constraint: Member must have length less than or equal to %d", maxTags))
	}
	for i, k := range in.transitive {
		member := fmt.Sprintf("transitiveTagKeys.%d.member", i+1)
		add(lengthError(k, member, 1, 128))
		if k != "" {
			add(patternError(k, member, tagKeyPattern))
		}
	}
	if in.hasExternalID {
		add(lengthError(in.externalID, "externalId", 2, 1224))
		add(patternError(in.externalID, "externalId", externalIDPattern))
	}
	if in.hasPolicy {
		add(lengthError(in.policy, "policy", 1, maxPolicyChars))
		if in.policy != "" {
			add(patternError(in.policy, "policy", policyPattern))
		}
	}
	if in.hasDuration {
		if in.durationSeconds < minDuration {
			add(fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to %d", in.durationSeconds, minDuration))
		} else if in.durationSeconds > maxDuration {
			add(fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to %d", in.durationSeconds, maxDuration))
		}
	}
	if len(errs) > 0 {
		return roleInfo{}, validationErrors(errs)
	}

	m := roleARNPattern.FindStringSubmatch(in.roleARN)
	if m == nil {
		return roleInfo{}, errValidation(fmt.Sprintf("Request ARN is invalid: %q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", in.roleARN))
	}
	if caller.isSession() && in.durationSeconds > maxChainDuration {
		return roleInfo{}, errValidation("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}

	// Tag keys are case-insensitive but case-preserving.
	seen := map[string]bool{}
	for _, t := range in.tags {
		k := strings.ToLower(t.Key)
		if seen[k] {
			return roleInfo{}, invalidParameter("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		seen[k] = true
	}
	for _, k := range in.transitive {
		if !seen[strings.ToLower(k)] {
			return roleInfo{}, invalidParameter(fmt.Sprintf("The specified transitive tag key %q must be included in the requested tags.", k))
		}
	}
	for _, t := range caller.transitive {
		if seen[strings.ToLower(t.Key)] {
			return roleInfo{}, invalidParameter(fmt.Sprintf("Session tag %q conflicts with a transitive tag inherited from the calling session; a transitive tag cannot be set again in a role chain.", t.Key))
		}
	}
	if in.hasPolicy {
		var doc map[string]any
		if err := json.Unmarshal([]byte(in.policy), &doc); err != nil {
			return roleInfo{}, &stsError{status: http.StatusBadRequest, code: "MalformedPolicyDocument", message: "The policy is not in the valid JSON format."}
		}
	}

	sum := sha256.Sum256([]byte(m[0]))
	return roleInfo{
		partition: m[1],
		account:   m[2],
		name:      m[4],
		uniqueID:  "AROA" + base32Upper(sum[:], 17),
	}, nil
}

func invalidParameter(msg string) *stsError {
	return &stsError{status: http.StatusBadRequest, code: "InvalidParameterValue", message: msg}
}

// base32Upper maps bytes to n characters of an uppercase alphabet, the
// look of IAM unique IDs.
func base32Upper(b []byte, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	out := make([]byte, n)
	for i := range out {
		out[i] = alphabet[int(b[i%len(b)])%len(alphabet)]
	}
	return string(out)
}
