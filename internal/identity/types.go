// Package identity is podid's domain: clusters, pod identity associations,
// service-account token claims and the credential issuance flow. The
// interfaces the rest of podid plugs into (Store, TokenVerifier, Issuer) live
// here; HTTP layers and backends depend on this package, never the reverse.
package identity

import (
	"context"
	"log/slog"
	"time"
)

// Audience is the only audience a pod identity token may carry.
const Audience = "pods.eks.amazonaws.com"

// Key source kinds of a cluster.
const (
	KeysJWKS       = "jwks"       // inline JWKS document
	KeysJWKSFile   = "jwksFile"   // path of a JWKS file on the server host
	KeysJWKSURL    = "jwksURL"    // JWKS fetched over HTTPS
	KeysKubernetes = "kubernetes" // the cluster's own /openid/v1/jwks endpoint
	KeysPEM        = "pem"        // inline PEM public keys
	// KeysTokenReview holds no keys: every token is checked by the cluster's
	// API server (URL) with the TokenReview API instead.
	KeysTokenReview = "tokenReview"
)

// LiveCheckTokenReview is the KeySource.LiveCheck that asks the cluster's API
// server, with the TokenReview API, whether each token is still valid, on
// top of the signature check. It catches tokens of deleted pods.
const LiveCheckTokenReview = "tokenReview"

// KeySource says where a cluster's service-account signing keys come from.
type KeySource struct {
	Kind string `json:"kind"`
	// JWKS is the inline JWKS document (kind jwks).
	JWKS string `json:"jwks,omitempty"`
	// Path is a JWKS file on the server host (kind jwksFile).
	Path string `json:"path,omitempty"`
	// URL is the JWKS URL (kind jwksURL) or the API server's base URL
	// (kind kubernetes and tokenReview, and any kind but jwksURL with a
	// LiveCheck).
	URL string `json:"url,omitempty"`
	// BearerToken authenticates to the API server (kind kubernetes and
	// tokenReview, and with a LiveCheck).
	BearerToken string `json:"bearerToken,omitempty"`
	// CACert is a PEM bundle used to verify the URL's TLS certificate.
	CACert string `json:"caCert,omitempty"`
	// PEM holds one or more PEM public keys (kind pem).
	PEM string `json:"pem,omitempty"`
	// LiveCheck is "" (none) or LiveCheckTokenReview. It needs URL and
	// BearerToken, whose identity may create tokenreviews (ClusterRole
	// system:auth-delegator).
	LiveCheck string `json:"liveCheck,omitempty"`
}

// LogValue keeps the bearer token out of logs.
func (k KeySource) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", k.Kind), slog.String("url", k.URL), slog.String("path", k.Path), slog.String("liveCheck", k.LiveCheck))
}

// Cluster is a Kubernetes cluster whose service-account tokens podid accepts.
type Cluster struct {
	Name       string
	Issuer     string
	Keys       KeySource
	CreatedAt  time.Time
	ModifiedAt time.Time
}

// Association maps a (cluster, namespace, service account) to an IAM role.
type Association struct {
	ID                 string
	Cluster            string
	Namespace          string
	ServiceAccount     string
	RoleARN            string
	TargetRoleARN      string
	DisableSessionTags bool
	// Policy is a session policy, only allowed with DisableSessionTags.
	Policy string
	// ExternalID is sent when chaining into TargetRoleARN, so the target
	// role's trust policy can pin this association.
	ExternalID         string
	Tags               map[string]string
	OwnerARN           string
	ClientRequestToken string
	CreatedAt          time.Time
	ModifiedAt         time.Time
}

// AssociationFilter selects associations of one cluster, in ID order.
type AssociationFilter struct {
	Cluster        string
	Namespace      string // optional
	ServiceAccount string // optional
	AfterID        string // exclusive; "" starts at the beginning
	Limit          int
}

// AuditEvent is one issuance or denial. It never holds a token or secret.
type AuditEvent struct {
	ID             int64
	Time           time.Time
	Cluster        string
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	NodeName       string
	AssociationID  string
	RoleARN        string
	Outcome        string // "issued" or "denied"
	ErrorType      string // the AWS error name for a denial
	Message        string
	STSRequestID   string
}

// Audit outcomes.
const (
	OutcomeIssued = "issued"
	OutcomeDenied = "denied"
)

// AuditFilter pages through the ledger, newest first.
type AuditFilter struct {
	Cluster  string // optional
	BeforeID int64  // exclusive; 0 starts at the newest
	Limit    int
}

// Store persists clusters, associations and the audit ledger. Backends
// return ErrNotFound and ErrConflict (possibly wrapped) for missing rows and
// uniqueness violations. Each backend lives in its own package under
// internal/store and passes internal/store/storetest.
type Store interface {
	CreateCluster(ctx context.Context, c *Cluster) error
	UpdateCluster(ctx context.Context, c *Cluster) error
	GetCluster(ctx context.Context, name string) (*Cluster, error)
	ListClusters(ctx context.Context) ([]Cluster, error)
	// DeleteCluster removes the cluster and its associations.
	DeleteCluster(ctx context.Context, name string) error

	// CreateAssociation fails with ErrConflict when the cluster already has
	// an association for the namespace and service account, or the ID is
	// taken.
	CreateAssociation(ctx context.Context, a *Association) error
	GetAssociation(ctx context.Context, cluster, id string) (*Association, error)
	FindAssociation(ctx context.Context, cluster, namespace, serviceAccount string) (*Association, error)
	FindAssociationByRequestToken(ctx context.Context, cluster, token string) (*Association, error)
	UpdateAssociation(ctx context.Context, a *Association) error
	DeleteAssociation(ctx context.Context, cluster, id string) error
	ListAssociations(ctx context.Context, f AssociationFilter) ([]Association, error)

	AppendAudit(ctx context.Context, e *AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)

	Close() error
}

// TokenClaims are the verified claims of a projected service-account token.
type TokenClaims struct {
	Issuer             string
	Subject            string
	Audience           []string
	ID                 string
	IssuedAt           time.Time
	NotBefore          time.Time
	Expiry             time.Time
	Namespace          string
	ServiceAccountName string
	ServiceAccountUID  string
	PodName            string
	PodUID             string
	NodeName           string
	NodeUID            string
}

// TokenVerifier checks a token against a cluster's issuer and signing keys.
// It returns *Error with CodeInvalidToken or CodeExpiredToken for a bad
// token, and another code when the keys cannot be had.
type TokenVerifier interface {
	Verify(ctx context.Context, c *Cluster, token string) (*TokenClaims, error)
}

// Tag is an STS session tag.
type Tag struct {
	Key   string
	Value string
}

// AssumeRoleInput is one STS AssumeRole call, optionally chained into a
// second role with the credentials of the first.
type AssumeRoleInput struct {
	RoleARN           string
	RoleSessionName   string
	Tags              []Tag
	TransitiveTagKeys []string
	ExternalID        string
	Policy            string
	Duration          time.Duration

	TargetRoleARN    string
	TargetExternalID string
}

// Credentials are temporary AWS credentials.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
}

// LogValue keeps the secret and session token out of logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("accessKeyId", c.AccessKeyID), slog.Time("expiration", c.Expiration))
}

// AssumedRole is what STS returned for the last role in the chain.
type AssumedRole struct {
	Credentials   Credentials
	ARN           string
	AssumedRoleID string
	RequestID     string
}

// Issuer obtains role credentials from AWS STS. It returns *Error whose code
// is the EKS Auth error an STS failure maps to.
type Issuer interface {
	AssumeRole(ctx context.Context, in AssumeRoleInput) (*AssumedRole, error)
}
