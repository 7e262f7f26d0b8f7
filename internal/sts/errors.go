package sts

import (
	"context"
	"errors"
	"fmt"
	"net"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/podid/podid/internal/identity"
)

// mapError turns an SDK error from AssumeRole on role into an
// *identity.Error. chainedFrom is the first role when role was assumed with
// that role's credentials (role chaining), else "".
func mapError(err error, role, chainedFrom string) error {
	wrap := func(code identity.Code, format string, args ...any) error {
		return &identity.Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
	}
	// Who signed the call decides whose credentials STS rejected and whose
	// trust the target role must grant.
	caller := "the podid server's AWS principal"
	if chainedFrom != "" {
		caller = "role " + chainedFrom
	}

	if apiErr, ok := errorsAs[smithy.APIError](err); ok {
		msg := apiErr.ErrorMessage()
		switch apiErr.ErrorCode() {
		case "AccessDenied", "AccessDeniedException":
			return wrap(identity.CodeAccessDenied,
				"STS denied AssumeRole on %s: %s (the role's trust policy must allow %s sts:AssumeRole and sts:TagSession)", role, msg, caller)
		case "RegionDisabledException":
			return wrap(identity.CodeAccessDenied,
				"STS denied AssumeRole on %s: %s (activate STS for this region in the role's account)", role, msg)
		case "Throttling", "ThrottlingException", "RequestLimitExceeded":
			return wrap(identity.CodeThrottling, "STS throttled AssumeRole on %s: %s; retry later", role, msg)
		case "MalformedPolicyDocument", "MalformedPolicyDocumentException":
			return wrap(identity.CodeInvalidParameter, "STS rejected the session policy for %s: %s", role, msg)
		case "PackedPolicyTooLarge", "PackedPolicyTooLargeException":
			return wrap(identity.CodeInvalidParameter,
				"STS rejected AssumeRole on %s: %s (shorten the session policy or session tags)", role, msg)
		case "ValidationError", "InvalidParameterValue":
			return wrap(identity.CodeInvalidParameter, "STS rejected the AssumeRole parameters for %s: %s", role, msg)
		case "ExpiredTokenException", "ExpiredToken", "InvalidClientTokenId", "SignatureDoesNotMatch",
			"MissingAuthenticationToken", "IncompleteSignature":
			if chainedFrom != "" {
				return wrap(identity.CodeInternal,
					"STS rejected the session credentials of role %s while assuming %s: %s", chainedFrom, role, msg)
			}
			return wrap(identity.CodeInternal,
				"STS rejected the server's AWS credentials while assuming %s: %s (check the credentials podid runs with)", role, msg)
		}
		if status, ok := httpStatus(err); ok && status >= 500 {
			return wrap(identity.CodeServiceUnavailable, "STS is unavailable (AssumeRole on %s): %s %s", role, apiErr.ErrorCode(), msg)
		}
		return wrap(identity.CodeInternal, "STS AssumeRole on %s failed: %s: %s", role, apiErr.ErrorCode(), msg)
	}

	if status, ok := httpStatus(err); ok && status >= 500 {
		return wrap(identity.CodeServiceUnavailable, "STS is unavailable (AssumeRole on %s): HTTP %d", role, status)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return wrap(identity.CodeServiceUnavailable, "STS did not answer in time (AssumeRole on %s)", role)
	}
	if errors.Is(err, context.Canceled) {
		return wrap(identity.CodeServiceUnavailable, "AssumeRole on %s was canceled", role)
	}
	if _, ok := errorsAs[*smithyhttp.RequestSendError](err); ok {
		return wrap(identity.CodeServiceUnavailable, "cannot reach STS (AssumeRole on %s)", role)
	}
	if _, ok := errorsAs[net.Error](err); ok {
		return wrap(identity.CodeServiceUnavailable, "cannot reach STS (AssumeRole on %s)", role)
	}
	// What is left is local: no usable credentials, bad configuration, an
	// answer that does not decode.
	return wrap(identity.CodeInternal, "calling STS AssumeRole on %s failed", role)
}

func httpStatus(err error) (int, bool) {
	if re, ok := errorsAs[*awshttp.ResponseError](err); ok {
		return re.HTTPStatusCode(), true
	}
	if re, ok := errorsAs[*smithyhttp.ResponseError](err); ok {
		return re.HTTPStatusCode(), true
	}
	return 0, false
}

// errorsAs is errors.As for a target type, to keep mapError readable.
func errorsAs[T any](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
