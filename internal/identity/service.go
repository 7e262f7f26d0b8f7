package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"time"
)

// DefaultSessionDuration is the lifetime EKS gives pod identity credentials.
const DefaultSessionDuration = 6 * time.Hour

// KeyChecker is implemented by verifiers that can load a cluster's keys
// ahead of time, so registering a cluster with unusable keys fails at once.
type KeyChecker interface {
	CheckKeys(ctx context.Context, c *Cluster) (int, error)
}

// Limiter admits STS calls per namespace; see internal/ratelimit. Acquire
// returns a release func to call when the STS call is done.
type Limiter interface {
	Acquire(ctx context.Context, cluster, namespace string) (release func(), err error)
}

// Config configures a Service.
type Config struct {
	// Limiter, if set, bounds and fairly shares STS calls by namespace.
	Limiter Limiter
	// Policy, if set, restricts which roles associations may bind where.
	Policy   *Policy
	Store    Store
	Verifier TokenVerifier
	Issuer   Issuer
	// Region and Account are used in the ARNs podid hands out.
	Region  string
	Account string
	// SessionDuration is the lifetime requested from STS.
	SessionDuration time.Duration
	Now             func() time.Time
	Rand            io.Reader
	Logger          *slog.Logger
}

// Service implements the association API, cluster registration and the
// AssumeRoleForPodIdentity flow on top of a Store, a TokenVerifier and an
// Issuer. It is safe for concurrent use.
type Service struct {
	cfg       Config
	partition string
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Issuer == nil {
		return nil, errors.New("identity: Store, Verifier and Issuer are required")
	}
	if !regionRE.MatchString(cfg.Region) {
		return nil, fmt.Errorf("region %q is not an AWS region name (e.g. us-east-1)", cfg.Region)
	}
	if !accountRE.MatchString(cfg.Account) {
		return nil, fmt.Errorf("account %q is not a 12-digit AWS account id", cfg.Account)
	}
	if cfg.SessionDuration == 0 {
		cfg.SessionDuration = DefaultSessionDuration
	}
	if cfg.SessionDuration < 15*time.Minute || cfg.SessionDuration > 12*time.Hour {
		return nil, fmt.Errorf("session duration %s must be between 15m and 12h", cfg.SessionDuration)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, partition: partitionOf(cfg.Region)}, nil
}

func partitionOf(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// ClusterARN is the ARN podid uses for a cluster, as EKS would name it.
func (s *Service) ClusterARN(cluster string) string {
	return fmt.Sprintf("arn:%s:eks:%s:%s:cluster/%s", s.partition, s.cfg.Region, s.cfg.Account, cluster)
}

// AssociationARN is the ARN of an association.
func (s *Service) AssociationARN(a *Association) string {
	return fmt.Sprintf("arn:%s:eks:%s:%s:podidentityassociation/%s/%s", s.partition, s.cfg.Region, s.cfg.Account, a.Cluster, a.ID)
}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters of alnum drawn from the configured
// source, without modulo bias.
func (s *Service) randomString(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n*2)
	for len(out) < n {
		if _, err := io.ReadFull(s.cfg.Rand, buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) < 252 && len(out) < n { // 252 = 7*36: keeps the draw uniform
				out = append(out, alnum[int(b)%36])
			}
		}
	}
	return string(out), nil
}

// storeErr turns a store failure into a domain error.
func storeErr(err error, notFound string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return &Error{Code: CodeNotFound, Message: notFound, Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeServiceUnavailable, Message: "the request was cancelled or timed out", Err: err}
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Code: CodeInternal, Message: "the store failed; the request changed nothing and can be retried", Err: err}
}

// --- clusters ---

// ClusterInput registers or updates a cluster.
type ClusterInput struct {
	Name   string
	Issuer string
	Keys   KeySource
}

func (s *Service) validateCluster(ctx context.Context, in ClusterInput) (*Cluster, error) {
	if err := ValidateClusterName(in.Name); err != nil {
		return nil, err
	}
	if in.Issuer == "" {
		return nil, Errorf(CodeInvalidParameter, "issuer is required: the 'iss' claim of the cluster's service-account tokens (see the API server's --service-account-issuer)")
	}
	if len(in.Issuer) > 1024 {
		return nil, Errorf(CodeInvalidParameter, "issuer must be at most 1024 characters")
	}
	if err := validateKeySource(in.Keys); err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	c := &Cluster{Name: in.Name, Issuer: in.Issuer, Keys: in.Keys, CreatedAt: now, ModifiedAt: now}
	if kc, ok := s.cfg.Verifier.(KeyChecker); ok {
		if _, err := kc.CheckKeys(ctx, c); err != nil {
			var e *Error
			if errors.As(err, &e) && e.Code != CodeInternal {
				return nil, Errorf(CodeInvalidParameter, "keys: %s", e.Message)
			}
			return nil, Errorf(CodeInvalidParameter, "keys: %v", err)
		}
	}
	return c, nil
}

func validateKeySource(k KeySource) error {
	need := func(field, v string) error {
		if v == "" {
			return Errorf(CodeInvalidParameter, "keys.%s is required for keys of kind %q", field, k.Kind)
		}
		return nil
	}
	apiServer := func(why string) error {
		if k.URL == "" || k.BearerToken == "" {
			return Errorf(CodeInvalidParameter, "%s needs keys.url (the API server) and keys.bearerToken (allowed to create tokenreviews: ClusterRole system:auth-delegator)", why)
		}
		return checkURL(k.URL)
	}
	switch k.LiveCheck {
	case "":
	case LiveCheckTokenReview:
		if k.Kind == KeysJWKSURL {
			return Errorf(CodeInvalidParameter, "keys.liveCheck cannot be used with keys of kind %q, whose url is not the API server: use kind %q, or kind %q with url set to the API server", KeysJWKSURL, KeysKubernetes, KeysJWKS)
		}
		if k.Kind != KeysTokenReview {
			if err := apiServer(fmt.Sprintf("keys.liveCheck %q", k.LiveCheck)); err != nil {
				return err
			}
		}
	default:
		return Errorf(CodeInvalidParameter, "keys.liveCheck %q is not %q or empty", truncate(k.LiveCheck), LiveCheckTokenReview)
	}
	switch k.Kind {
	case KeysJWKS:
		return need("jwks", k.JWKS)
	case KeysJWKSFile:
		return need("path", k.Path)
	case KeysPEM:
		return need("pem", k.PEM)
	case KeysJWKSURL, KeysKubernetes:
		if err := need("url", k.URL); err != nil {
			return err
		}
		return checkURL(k.URL)
	case KeysTokenReview:
		return apiServer(fmt.Sprintf("keys of kind %q", k.Kind))
	case "":
		return Errorf(CodeInvalidParameter, "keys.kind is required: one of %s", keyKinds)
	}
	return Errorf(CodeInvalidParameter, "keys.kind %q is not one of %s", truncate(k.Kind), keyKinds)
}

var keyKinds = strings.Join([]string{KeysJWKS, KeysJWKSFile, KeysJWKSURL, KeysKubernetes, KeysPEM, KeysTokenReview}, ", ")

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Errorf(CodeInvalidParameter, "keys.url %q is not an http(s) URL", truncate(raw))
	}
	return nil
}

// RegisterCluster adds a cluster after checking that its keys load.
func (s *Service) RegisterCluster(ctx context.Context, in ClusterInput) (*Cluster, error) {
	c, err := s.validateCluster(ctx, in)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.CreateCluster(ctx, c); err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, &Error{Code: CodeInUse, Message: fmt.Sprintf("cluster %q is already registered; update it instead", c.Name), Err: err}
		}
		return nil, storeErr(err, "")
	}
	s.cfg.Logger.InfoContext(ctx, "cluster registered", "cluster", c.Name, "issuer", c.Issuer, "keys", c.Keys)
	return c, nil
}

// UpdateCluster replaces a cluster's issuer and keys.
func (s *Service) UpdateCluster(ctx context.Context, in ClusterInput) (*Cluster, error) {
	old, err := s.GetCluster(ctx, in.Name)
	if err != nil {
		return nil, err
	}
	c, err := s.validateCluster(ctx, in)
	if err != nil {
		return nil, err
	}
	c.CreatedAt = old.CreatedAt
	if err := s.cfg.Store.UpdateCluster(ctx, c); err != nil {
		return nil, storeErr(err, fmt.Sprintf("cluster %q is not registered", in.Name))
	}
	s.cfg.Logger.InfoContext(ctx, "cluster updated", "cluster", c.Name, "issuer", c.Issuer, "keys", c.Keys)
	return c, nil
}

// GetCluster returns a registered cluster.
func (s *Service) GetCluster(ctx context.Context, name string) (*Cluster, error) {
	if err := ValidateClusterName(name); err != nil {
		return nil, err
	}
	c, err := s.cfg.Store.GetCluster(ctx, name)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("No cluster found for name: %s.", name))
	}
	return c, nil
}

// ListClusters returns every registered cluster.
func (s *Service) ListClusters(ctx context.Context) ([]Cluster, error) {
	cs, err := s.cfg.Store.ListClusters(ctx)
	return cs, storeErr(err, "")
}

// DeleteCluster removes a cluster and all its associations.
func (s *Service) DeleteCluster(ctx context.Context, name string) error {
	if err := ValidateClusterName(name); err != nil {
		return err
	}
	if err := s.cfg.Store.DeleteCluster(ctx, name); err != nil {
		return storeErr(err, fmt.Sprintf("No cluster found for name: %s.", name))
	}
	if f, ok := s.cfg.Verifier.(interface{ Forget(cluster string) }); ok {
		f.Forget(name)
	}
	s.cfg.Logger.InfoContext(ctx, "cluster deleted", "cluster", name)
	return nil
}

// --- associations ---

// CreateAssociationInput is CreatePodIdentityAssociation's request.
type CreateAssociationInput struct {
	Cluster            string
	Namespace          string
	ServiceAccount     string
	RoleARN            string
	TargetRoleARN      string
	DisableSessionTags bool
	Policy             string
	Tags               map[string]string
	ClientRequestToken string
}

// CreateAssociation creates an association. A repeated call with the same
// clientRequestToken and parameters returns the association it created.
func (s *Service) CreateAssociation(ctx context.Context, in CreateAssociationInput) (*Association, error) {
	if err := ValidateClusterName(in.Cluster); err != nil {
		return nil, err
	}
	for _, check := range []error{
		validateNamespace(in.Namespace),
		validateServiceAccount(in.ServiceAccount),
		validateRoleARN("roleArn", in.RoleARN),
		validateTags(in.Tags),
		validatePolicy(in.Policy, in.DisableSessionTags),
		validateRequestToken(in.ClientRequestToken),
	} {
		if check != nil {
			return nil, check
		}
	}
	if in.TargetRoleARN != "" {
		if err := validateRoleARN("targetRoleArn", in.TargetRoleARN); err != nil {
			return nil, err
		}
	}
	if err := s.cfg.Policy.Check(in.Cluster, in.Namespace, in.RoleARN, in.TargetRoleARN); err != nil {
		return nil, err
	}
	if _, err := s.GetCluster(ctx, in.Cluster); err != nil {
		return nil, err
	}
	if in.ClientRequestToken != "" {
		if a, err := s.replay(ctx, in); a != nil || err != nil {
			return a, err
		}
	}
	id, err := s.randomString(17)
	if err != nil {
		return nil, storeErr(err, "")
	}
	now := s.cfg.Now().UTC()
	a := &Association{
		ID:                 "a-" + id,
		Cluster:            in.Cluster,
		Namespace:          in.Namespace,
		ServiceAccount:     in.ServiceAccount,
		RoleARN:            in.RoleARN,
		TargetRoleARN:      in.TargetRoleARN,
		DisableSessionTags: in.DisableSessionTags,
		Policy:             in.Policy,
		Tags:               maps.Clone(in.Tags),
		ClientRequestToken: in.ClientRequestToken,
		CreatedAt:          now,
		ModifiedAt:         now,
	}
	if a.TargetRoleARN != "" {
		if a.ExternalID, err = s.newExternalID(); err != nil {
			return nil, storeErr(err, "")
		}
	}
	if err := s.cfg.Store.CreateAssociation(ctx, a); err != nil {
		if errors.Is(err, ErrConflict) {
			// A concurrent create with the same token may have won the race.
			if in.ClientRequestToken != "" {
				if a, rerr := s.replay(ctx, in); a != nil || rerr != nil {
					return a, rerr
				}
			}
			return nil, &Error{Code: CodeInUse, Message: fmt.Sprintf("Association already exists for serviceAccount %s in namespace %s of cluster %s", in.ServiceAccount, in.Namespace, in.Cluster), Err: err}
		}
		return nil, storeErr(err, fmt.Sprintf("No cluster found for name: %s.", in.Cluster))
	}
	s.cfg.Logger.InfoContext(ctx, "association created", "cluster", a.Cluster, "associationId", a.ID, "namespace", a.Namespace, "serviceAccount", a.ServiceAccount, "roleArn", a.RoleARN)
	return a, nil
}

func (s *Service) newExternalID() (string, error) {
	r, err := s.randomString(32)
	if err != nil {
		return "", err
	}
	return r[0:8] + "-" + r[8:12] + "-" + r[12:16] + "-" + r[16:20] + "-" + r[20:32], nil
}

// replay returns the association an earlier create with the same token made,
// or an error if that create had other parameters.
func (s *Service) replay(ctx context.Context, in CreateAssociationInput) (*Association, error) {
	a, err := s.cfg.Store.FindAssociationByRequestToken(ctx, in.Cluster, in.ClientRequestToken)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr(err, "")
	}
	same := a.Namespace == in.Namespace && a.ServiceAccount == in.ServiceAccount && a.RoleARN == in.RoleARN &&
		a.TargetRoleARN == in.TargetRoleARN && a.DisableSessionTags == in.DisableSessionTags && a.Policy == in.Policy &&
		maps.Equal(a.Tags, in.Tags)
	if !same {
		return nil, Errorf(CodeInvalidParameter, "clientRequestToken %q was already used to create association %s with different parameters", in.ClientRequestToken, a.ID)
	}
	return a, nil
}

// DescribeAssociation returns one association.
func (s *Service) DescribeAssociation(ctx context.Context, cluster, id string) (*Association, error) {
	if err := ValidateClusterName(cluster); err != nil {
		return nil, err
	}
	if err := validateAssociationID(id); err != nil {
		return nil, err
	}
	if _, err := s.GetCluster(ctx, cluster); err != nil {
		return nil, err
	}
	a, err := s.cfg.Store.GetAssociation(ctx, cluster, id)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("Pod Identity association %s not found in cluster %s", id, cluster))
	}
	return a, nil
}

// UpdateAssociationInput is UpdatePodIdentityAssociation's request. Nil
// fields are left as they are; an empty TargetRoleARN removes the target.
type UpdateAssociationInput struct {
	Cluster            string
	ID                 string
	RoleARN            *string
	TargetRoleARN      *string
	DisableSessionTags *bool
	Policy             *string
	ClientRequestToken string
}

// UpdateAssociation changes an association's role and session settings.
func (s *Service) UpdateAssociation(ctx context.Context, in UpdateAssociationInput) (*Association, error) {
	if err := validateRequestToken(in.ClientRequestToken); err != nil {
		return nil, err
	}
	a, err := s.DescribeAssociation(ctx, in.Cluster, in.ID)
	if err != nil {
		return nil, err
	}
	if in.RoleARN != nil {
		if err := validateRoleARN("roleArn", *in.RoleARN); err != nil {
			return nil, err
		}
		a.RoleARN = *in.RoleARN
	}
	if in.TargetRoleARN != nil {
		if *in.TargetRoleARN != "" {
			if err := validateRoleARN("targetRoleArn", *in.TargetRoleARN); err != nil {
				return nil, err
			}
		}
		a.TargetRoleARN = *in.TargetRoleARN
	}
	if in.DisableSessionTags != nil {
		a.DisableSessionTags = *in.DisableSessionTags
	}
	if in.Policy != nil {
		a.Policy = *in.Policy
	}
	if err := validatePolicy(a.Policy, a.DisableSessionTags); err != nil {
		return nil, err
	}
	if err := s.cfg.Policy.Check(a.Cluster, a.Namespace, a.RoleARN, a.TargetRoleARN); err != nil {
		return nil, err
	}
	switch {
	case a.TargetRoleARN == "":
		a.ExternalID = ""
	case a.ExternalID == "":
		if a.ExternalID, err = s.newExternalID(); err != nil {
			return nil, storeErr(err, "")
		}
	}
	a.ModifiedAt = s.cfg.Now().UTC()
	if err := s.cfg.Store.UpdateAssociation(ctx, a); err != nil {
		return nil, storeErr(err, fmt.Sprintf("Pod Identity association %s not found in cluster %s", in.ID, in.Cluster))
	}
	s.cfg.Logger.InfoContext(ctx, "association updated", "cluster", a.Cluster, "associationId", a.ID, "roleArn", a.RoleARN)
	return a, nil
}

// DeleteAssociation deletes an association and returns it as it was.
func (s *Service) DeleteAssociation(ctx context.Context, cluster, id string) (*Association, error) {
	a, err := s.DescribeAssociation(ctx, cluster, id)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.DeleteAssociation(ctx, cluster, id); err != nil {
		return nil, storeErr(err, fmt.Sprintf("Pod Identity association %s not found in cluster %s", id, cluster))
	}
	s.cfg.Logger.InfoContext(ctx, "association deleted", "cluster", cluster, "associationId", id)
	return a, nil
}

// ListAssociationsInput is ListPodIdentityAssociations' request.
type ListAssociationsInput struct {
	Cluster        string
	Namespace      string
	ServiceAccount string
	MaxResults     int // 0 means the default
	NextToken      string
}

// DefaultMaxResults is the page size when a list request names none.
const DefaultMaxResults = 100

// pageToken is the decoded form of a list nextToken. It carries the filters
// so a token cannot be replayed against a different query.
type pageToken struct {
	After          string `json:"a"`
	Namespace      string `json:"n,omitempty"`
	ServiceAccount string `json:"s,omitempty"`
}

// ListAssociations returns one page of a cluster's associations and the
// token of the next page ("" on the last).
func (s *Service) ListAssociations(ctx context.Context, in ListAssociationsInput) ([]Association, string, error) {
	if err := ValidateClusterName(in.Cluster); err != nil {
		return nil, "", err
	}
	if in.MaxResults == 0 {
		in.MaxResults = DefaultMaxResults
	}
	if in.MaxResults < 1 || in.MaxResults > 100 {
		return nil, "", Errorf(CodeInvalidParameter, "maxResults must be between 1 and 100, got %d", in.MaxResults)
	}
	f := AssociationFilter{Cluster: in.Cluster, Namespace: in.Namespace, ServiceAccount: in.ServiceAccount, Limit: in.MaxResults + 1}
	if in.NextToken != "" {
		var pt pageToken
		raw, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		if err == nil {
			err = json.Unmarshal(raw, &pt)
		}
		if err != nil || validateAssociationID(pt.After) != nil {
			return nil, "", Errorf(CodeInvalidParameter, "nextToken is not a token this API returned")
		}
		if pt.Namespace != in.Namespace || pt.ServiceAccount != in.ServiceAccount {
			return nil, "", Errorf(CodeInvalidParameter, "nextToken belongs to a list with other namespace or serviceAccount filters")
		}
		f.AfterID = pt.After
	}
	if _, err := s.GetCluster(ctx, in.Cluster); err != nil {
		return nil, "", err
	}
	as, err := s.cfg.Store.ListAssociations(ctx, f)
	if err != nil {
		return nil, "", storeErr(err, "")
	}
	if len(as) <= in.MaxResults {
		return as, "", nil
	}
	as = as[:in.MaxResults]
	raw, _ := json.Marshal(pageToken{After: as[len(as)-1].ID, Namespace: in.Namespace, ServiceAccount: in.ServiceAccount})
	return as, base64.RawURLEncoding.EncodeToString(raw), nil
}

// ListAudit returns up to max ledger events older than beforeID (0: the
// newest), newest first, and the cursor of the next page (0 on the last).
func (s *Service) ListAudit(ctx context.Context, cluster string, beforeID int64, max int) ([]AuditEvent, int64, error) {
	if max == 0 {
		max = DefaultMaxResults
	}
	if max < 1 || max > 1000 {
		return nil, 0, Errorf(CodeInvalidParameter, "maxResults must be between 1 and 1000, got %d", max)
	}
	if cluster != "" {
		if err := ValidateClusterName(cluster); err != nil {
			return nil, 0, err
		}
	}
	evs, err := s.cfg.Store.ListAudit(ctx, AuditFilter{Cluster: cluster, BeforeID: beforeID, Limit: max + 1})
	if err != nil {
		return nil, 0, storeErr(err, "")
	}
	if len(evs) <= max {
		return evs, 0, nil
	}
	evs = evs[:max]
	return evs, evs[len(evs)-1].ID, nil
}
