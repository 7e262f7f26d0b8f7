// Package api holds podid's public wire types and a small Go client.
//
// The EKS Auth and EKS shapes follow the AWS Smithy models field for field
// (JSON names, epoch-second timestamps); the admin shapes are podid's own.
// There is no EKS Auth SDK outside AWS's own Go SDK packages, so Client is
// the reference client for AssumeRoleForPodIdentity, pinned to the model.
package api

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Epoch is a timestamp encoded as a JSON number of epoch seconds, the
// restJson1 default. Fractions carry millisecond precision.
type Epoch time.Time

// MarshalJSON writes seconds since the epoch, with a fraction only when the
// time has milliseconds.
func (t Epoch) MarshalJSON() ([]byte, error) {
	tt := time.Time(t)
	ms := tt.UnixMilli()
	if ms%1000 == 0 {
		return strconv.AppendInt(nil, ms/1000, 10), nil
	}
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', 3, 64), nil
}

// UnmarshalJSON reads a JSON number of epoch seconds.
func (t *Epoch) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	sec, frac := math.Modf(f)
	*t = Epoch(time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC())
	return nil
}

// Time returns t as a time.Time.
func (t Epoch) Time() time.Time { return time.Time(t) }

// --- EKS Auth ---

// AssumeRoleForPodIdentityRequest is the body of
// POST /clusters/{clusterName}/assume-role-for-pod-identity.
type AssumeRoleForPodIdentityRequest struct {
	EksNodeName string `json:"eksNodeName,omitempty"`
	InstanceID  string `json:"instanceId,omitempty"`
	Token       string `json:"token"`
	Zone        string `json:"zone,omitempty"`
}

// AssumeRoleForPodIdentityResponse is its 200 body. Field order matches the
// SDK's alphabetical serialisation.
type AssumeRoleForPodIdentityResponse struct {
	AssumedRoleUser        AssumedRoleUser        `json:"assumedRoleUser"`
	Audience               string                 `json:"audience"`
	Credentials            Credentials            `json:"credentials"`
	PodIdentityAssociation PodIdentityAssociation `json:"podIdentityAssociation"`
	Subject                Subject                `json:"subject"`
}

// AssumedRoleUser identifies the STS session.
type AssumedRoleUser struct {
	Arn          string `json:"arn"`
	AssumeRoleID string `json:"assumeRoleId"`
}

// Credentials are the temporary credentials of the pod's role.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	Expiration      Epoch  `json:"expiration"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
}

// PodIdentityAssociation names the association that matched.
type PodIdentityAssociation struct {
	AssociationArn string `json:"associationArn"`
	AssociationID  string `json:"associationId"`
}

// Subject is the token's namespace and service account.
type Subject struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// ErrorBody is the restJson1 error body; the same name is in the
// X-Amzn-ErrorType header.
type ErrorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

// --- EKS pod identity associations ---

// Association is the EKS PodIdentityAssociation shape.
type Association struct {
	ClusterName        string            `json:"clusterName"`
	Namespace          string            `json:"namespace"`
	ServiceAccount     string            `json:"serviceAccount"`
	RoleArn            string            `json:"roleArn"`
	AssociationArn     string            `json:"associationArn"`
	AssociationID      string            `json:"associationId"`
	Tags               map[string]string `json:"tags"`
	CreatedAt          Epoch             `json:"createdAt"`
	ModifiedAt         Epoch             `json:"modifiedAt"`
	OwnerArn           string            `json:"ownerArn,omitempty"`
	DisableSessionTags bool              `json:"disableSessionTags"`
	TargetRoleArn      string            `json:"targetRoleArn,omitempty"`
	ExternalID         string            `json:"externalId,omitempty"`
	Policy             string            `json:"policy,omitempty"`
}

// AssociationSummary is an entry of ListPodIdentityAssociations.
type AssociationSummary struct {
	ClusterName    string `json:"clusterName"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	AssociationArn string `json:"associationArn"`
	AssociationID  string `json:"associationId"`
	OwnerArn       string `json:"ownerArn,omitempty"`
}

// AssociationResponse wraps a single association, as every single-item
// EKS operation does.
type AssociationResponse struct {
	Association Association `json:"association"`
}

// ListAssociationsResponse is ListPodIdentityAssociations' body.
type ListAssociationsResponse struct {
	Associations []AssociationSummary `json:"associations"`
	NextToken    *string              `json:"nextToken"`
}

// CreateAssociationRequest is CreatePodIdentityAssociation's body.
type CreateAssociationRequest struct {
	Namespace          *string           `json:"namespace"`
	ServiceAccount     *string           `json:"serviceAccount"`
	RoleArn            *string           `json:"roleArn"`
	ClientRequestToken *string           `json:"clientRequestToken,omitempty"`
	Tags               map[string]string `json:"tags,omitempty"`
	DisableSessionTags *bool             `json:"disableSessionTags,omitempty"`
	TargetRoleArn      *string           `json:"targetRoleArn,omitempty"`
	Policy             *string           `json:"policy,omitempty"`
}

// UpdateAssociationRequest is UpdatePodIdentityAssociation's body.
type UpdateAssociationRequest struct {
	RoleArn            *string `json:"roleArn,omitempty"`
	ClientRequestToken *string `json:"clientRequestToken,omitempty"`
	DisableSessionTags *bool   `json:"disableSessionTags,omitempty"`
	TargetRoleArn      *string `json:"targetRoleArn,omitempty"`
	Policy             *string `json:"policy,omitempty"`
}

// --- podid admin API ---

// AdminPrefix is the path prefix of podid's own admin API.
const AdminPrefix = "/podid/v1"

// KeySource says where a cluster's service-account signing keys come from.
// Kind is one of jwks, jwksFile, jwksURL, kubernetes, pem, or tokenReview
// (no keys: the API server at URL checks every token with TokenReview).
type KeySource struct {
	Kind        string `json:"kind"`
	JWKS        string `json:"jwks,omitempty"`
	Path        string `json:"path,omitempty"`
	URL         string `json:"url,omitempty"`
	BearerToken string `json:"bearerToken,omitempty"`
	CACert      string `json:"caCert,omitempty"`
	PEM         string `json:"pem,omitempty"`
	// LiveCheck "tokenReview" also has the API server at URL check each
	// token (TokenReview, with BearerToken), which refuses tokens of
	// deleted pods; "" is off.
	LiveCheck string `json:"liveCheck,omitempty"`
}

// Cluster is a registered cluster. Responses never echo BearerToken.
type Cluster struct {
	Name       string    `json:"name"`
	Issuer     string    `json:"issuer"`
	Arn        string    `json:"arn,omitempty"`
	Keys       KeySource `json:"keys"`
	CreatedAt  Epoch     `json:"createdAt"`
	ModifiedAt Epoch     `json:"modifiedAt"`
}

// ClusterResponse wraps a single cluster.
type ClusterResponse struct {
	Cluster Cluster `json:"cluster"`
}

// ListClustersResponse lists every cluster.
type ListClustersResponse struct {
	Clusters []Cluster `json:"clusters"`
}

// AuditEvent is one entry of the audit ledger.
type AuditEvent struct {
	ID             int64  `json:"id"`
	Time           Epoch  `json:"time"`
	Cluster        string `json:"cluster"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	PodName        string `json:"podName,omitempty"`
	PodUID         string `json:"podUid,omitempty"`
	NodeName       string `json:"nodeName,omitempty"`
	AssociationID  string `json:"associationId,omitempty"`
	RoleArn        string `json:"roleArn,omitempty"`
	Outcome        string `json:"outcome"`
	ErrorType      string `json:"errorType,omitempty"`
	Message        string `json:"message,omitempty"`
	STSRequestID   string `json:"stsRequestId,omitempty"`
}

// ListAuditResponse is one page of the ledger, newest first.
type ListAuditResponse struct {
	Events    []AuditEvent `json:"events"`
	NextToken *string      `json:"nextToken"`
}
