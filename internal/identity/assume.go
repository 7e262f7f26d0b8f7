package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// AssumeInput is AssumeRoleForPodIdentity's request.
type AssumeInput struct {
	Cluster string
	Token   string
	// Node context the agent may send; informational only.
	NodeName   string
	InstanceID string
	Zone       string
}

// AssumeResult is what AssumeRoleForPodIdentity returns.
type AssumeResult struct {
	Namespace      string
	ServiceAccount string
	Audience       string
	AssociationARN string
	AssociationID  string
	AssumedRole    AssumedRole
}

// The session tags EKS Pod Identity attaches, in the order it documents.
const (
	TagClusterARN     = "eks-cluster-arn"
	TagClusterName    = "eks-cluster-name"
	TagNamespace      = "kubernetes-namespace"
	TagServiceAccount = "kubernetes-service-account"
	TagPodName        = "kubernetes-pod-name"
	TagPodUID         = "kubernetes-pod-uid"
)

// AssumeRoleForPodIdentity verifies a pod's token, finds its association and
// returns role credentials from STS. Every outcome is written to the audit
// ledger.
func (s *Service) AssumeRoleForPodIdentity(ctx context.Context, in AssumeInput) (*AssumeResult, error) {
	ev := &AuditEvent{Cluster: in.Cluster, NodeName: in.NodeName}
	res, err := s.assume(ctx, in, ev)
	ev.Time = s.cfg.Now().UTC()
	if err != nil {
		ev.Outcome = OutcomeDenied
		ev.ErrorType = CodeName(CodeOf(err))
		var e *Error
		if errors.As(err, &e) {
			ev.Message = e.Message
		} else {
			ev.Message = "internal error"
		}
	} else {
		ev.Outcome = OutcomeIssued
	}
	s.audit(ctx, ev, err)
	return res, err
}

// audit records ev. A ledger failure is logged but does not turn a good
// issuance into an error: the pod's credentials do not depend on the ledger.
func (s *Service) audit(ctx context.Context, ev *AuditEvent, cause error) {
	if len(ev.Cluster) > 100 {
		ev.Cluster = ev.Cluster[:100]
	}
	if len(ev.NodeName) > 253 {
		ev.NodeName = ev.NodeName[:253]
	}
	attrs := []any{"cluster", ev.Cluster, "namespace", ev.Namespace, "serviceAccount", ev.ServiceAccount,
		"pod", ev.PodName, "node", ev.NodeName, "associationId", ev.AssociationID, "outcome", ev.Outcome}
	if cause != nil {
		s.cfg.Logger.InfoContext(ctx, "pod identity denied", append(attrs, "errorType", ev.ErrorType, "error", cause)...)
	} else {
		s.cfg.Logger.DebugContext(ctx, "pod identity issued", append(attrs, "roleArn", ev.RoleARN, "stsRequestId", ev.STSRequestID)...)
	}
	// The ledger write must not be cut short by a client that hung up.
	if err := s.cfg.Store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		s.cfg.Logger.ErrorContext(ctx, "audit ledger write failed", "error", err, "cluster", ev.Cluster, "outcome", ev.Outcome)
	}
}

func (s *Service) assume(ctx context.Context, in AssumeInput, ev *AuditEvent) (*AssumeResult, error) {
	if err := ValidateClusterName(in.Cluster); err != nil {
		return nil, err
	}
	if in.Token == "" {
		return nil, Errorf(CodeInvalidParameter, "token is required")
	}
	c, err := s.GetCluster(ctx, in.Cluster)
	if err != nil {
		return nil, err
	}
	claims, err := s.cfg.Verifier.Verify(ctx, c, in.Token)
	if err != nil {
		return nil, err
	}
	ev.Namespace, ev.ServiceAccount = claims.Namespace, claims.ServiceAccountName
	ev.PodName, ev.PodUID = claims.PodName, claims.PodUID
	if claims.NodeName != "" {
		// The token's node claim is signed by the cluster; the request's is not.
		if in.NodeName != "" && in.NodeName != claims.NodeName {
			return nil, Errorf(CodeAccessDenied, "the token is bound to a pod on node %q but the request came for node %q", claims.NodeName, in.NodeName)
		}
		ev.NodeName = claims.NodeName
	}
	a, err := s.cfg.Store.FindAssociation(ctx, c.Name, claims.Namespace, claims.ServiceAccountName)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("No Pod Identity Association exists for service account %s in namespace %s of cluster %s", claims.ServiceAccountName, claims.Namespace, c.Name))
	}
	ev.AssociationID, ev.RoleARN = a.ID, a.RoleARN
	req, err := s.assumeRoleInput(c, a, claims)
	if err != nil {
		return nil, err
	}
	if s.cfg.Limiter != nil {
		release, err := s.cfg.Limiter.Acquire(ctx, c.Name, claims.Namespace)
		if err != nil {
			return nil, &Error{Code: CodeThrottling, Message: err.Error() + "; retry with backoff", Err: err}
		}
		defer release()
	}
	role, err := s.cfg.Issuer.AssumeRole(ctx, req)
	if err != nil {
		return nil, err
	}
	ev.STSRequestID = role.RequestID
	if a.TargetRoleARN != "" {
		ev.RoleARN = a.TargetRoleARN
	}
	return &AssumeResult{
		Namespace:      claims.Namespace,
		ServiceAccount: claims.ServiceAccountName,
		Audience:       Audience,
		AssociationARN: s.AssociationARN(a),
		AssociationID:  a.ID,
		AssumedRole:    *role,
	}, nil
}

// assumeRoleInput builds the STS call EKS makes for an association.
func (s *Service) assumeRoleInput(c *Cluster, a *Association, claims *TokenClaims) (AssumeRoleInput, error) {
	suffix, err := s.randomString(8)
	if err != nil {
		return AssumeRoleInput{}, storeErr(err, "")
	}
	in := AssumeRoleInput{
		RoleARN:          a.RoleARN,
		RoleSessionName:  SessionName(c.Name, claims.PodName, suffix),
		Duration:         s.cfg.SessionDuration,
		TargetRoleARN:    a.TargetRoleARN,
		TargetExternalID: a.ExternalID,
	}
	if a.DisableSessionTags {
		in.ExternalID = ExternalID(s.cfg.Region, s.cfg.Account, c.Name, claims.Namespace, claims.ServiceAccountName)
		in.Policy = a.Policy
		return in, nil
	}
	in.Tags = SessionTags(s.ClusterARN(c.Name), c.Name, claims.Namespace, claims.ServiceAccountName, claims.PodName, claims.PodUID)
	for _, t := range in.Tags {
		in.TransitiveTagKeys = append(in.TransitiveTagKeys, t.Key)
	}
	return in, nil
}

// SessionTags are the session tags EKS attaches for a pod, in order; all of
// them are passed as transitive.
func SessionTags(clusterARN, cluster, namespace, serviceAccount, podName, podUID string) []Tag {
	return []Tag{
		{TagClusterARN, clusterARN},
		{TagClusterName, cluster},
		{TagNamespace, namespace},
		{TagServiceAccount, serviceAccount},
		{TagPodName, podName},
		{TagPodUID, podUID},
	}
}

// ExternalID is the external id sent instead of session tags when an
// association disables them: <region>/<account>/<cluster>/<namespace>/<sa>.
func ExternalID(region, account, cluster, namespace, serviceAccount string) string {
	return strings.Join([]string{region, account, cluster, namespace, serviceAccount}, "/")
}

// SessionName is the STS role session name for a pod:
// eks-<cluster>-<pod>-<suffix>, with the cluster and pod part cut so the
// whole stays within STS's 64 characters and the random suffix survives.
// Characters STS does not accept are replaced by '-'.
func SessionName(cluster, pod, suffix string) string {
	const max = 64
	head := "eks-" + cluster + "-" + pod
	if room := max - len(suffix) - 1; len(head) > room {
		head = head[:room]
	}
	b := []byte(head + "-" + suffix)
	for i, ch := range b {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("_+=,.@-", ch) >= 0
		if !ok {
			b[i] = '-'
		}
	}
	return string(b)
}

// CodeName is the AWS error name of a code in the EKS Auth and EKS APIs.
func CodeName(c Code) string {
	switch c {
	case CodeInvalidParameter:
		return "InvalidParameterException"
	case CodeInvalidRequest:
		return "InvalidRequestException"
	case CodeNotFound:
		return "ResourceNotFoundException"
	case CodeInUse:
		return "ResourceInUseException"
	case CodeAccessDenied:
		return "AccessDeniedException"
	case CodeInvalidToken:
		return "InvalidTokenException"
	case CodeExpiredToken:
		return "ExpiredTokenException"
	case CodeThrottling:
		return "ThrottlingException"
	case CodeServiceUnavailable:
		return "ServiceUnavailableException"
	}
	return "InternalServerException"
}
