// Package sts obtains role credentials from AWS STS. Issuer implements
// identity.Issuer: one AssumeRole with the pod's session tags, optionally
// chained into a target role with the first role's credentials.
package sts

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/podid/podid/internal/identity"
)

// Defaults applied by New.
const (
	DefaultRegion      = "us-east-1"
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 2
	DefaultMaxBackoff  = time.Second
	// MaxChainedDuration is STS's limit on a session obtained by role
	// chaining.
	MaxChainedDuration = time.Hour
)

// Config configures an Issuer.
type Config struct {
	// Endpoint is the STS endpoint URL; "" uses AWS's endpoint for Region.
	Endpoint string
	// Region is the signing region; default us-east-1.
	Region string
	// Credentials sign the first AssumeRole; nil uses the default AWS
	// credential chain (environment, shared config, IRSA, IMDS...).
	Credentials aws.CredentialsProvider
	// HTTPClient is optional; nil uses the SDK's default client.
	HTTPClient *http.Client
	// Timeout bounds each STS call, retries included; default 10s.
	Timeout time.Duration
	// MaxAttempts is the SDK retryer's attempt limit; default 2, so a
	// throttled or failing STS does not hold a pod's request for long.
	MaxAttempts int
	// MaxBackoff caps the wait between attempts; default 1s.
	MaxBackoff time.Duration
}

// Issuer calls STS AssumeRole. It is safe for concurrent use.
type Issuer struct {
	client  *sts.Client
	timeout time.Duration
}

var _ identity.Issuer = (*Issuer)(nil)

// New builds an Issuer. It loads the default AWS configuration (so the
// usual AWS_* environment settings apply) and overrides it with cfg.
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.Region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
			})
		}),
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.HTTPClient != nil {
		// Set after loading: config.WithHTTPClient fails on a plain
		// *http.Client when AWS_CA_BUNDLE is set, and a caller's own client
		// brings its own TLS settings.
		awsCfg.HTTPClient = cfg.HTTPClient
	}
	client := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return &Issuer{client: client, timeout: cfg.Timeout}, nil
}

// AssumeRole assumes in.RoleARN and, when in.TargetRoleARN is set, chains
// into the target role with the first session's credentials. It returns the
// last role's credentials and every STS request ID, comma-separated.
func (i *Issuer) AssumeRole(ctx context.Context, in identity.AssumeRoleInput) (*identity.AssumedRole, error) {
	first := &sts.AssumeRoleInput{
		RoleArn:         aws.String(in.RoleARN),
		RoleSessionName: aws.String(in.RoleSessionName),
	}
	for _, t := range in.Tags {
		first.Tags = append(first.Tags, types.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
	}
	if len(in.TransitiveTagKeys) > 0 {
		first.TransitiveTagKeys = append([]string(nil), in.TransitiveTagKeys...)
	}
	if in.ExternalID != "" {
		first.ExternalId = aws.String(in.ExternalID)
	}
	if in.Policy != "" {
		first.Policy = aws.String(in.Policy)
	}
	if in.Duration > 0 {
		first.DurationSeconds = aws.Int32(seconds(in.Duration))
	}
	out, reqID, err := i.call(ctx, first, nil)
	if err != nil {
		return nil, mapError(err, in.RoleARN, "")
	}
	if in.TargetRoleARN == "" {
		return assumedRole(out, reqID)
	}

	// The second session carries the first one's transitive tags on its
	// own; sending them again is an STS error, so no tags here.
	second := &sts.AssumeRoleInput{
		RoleArn:         aws.String(in.TargetRoleARN),
		RoleSessionName: aws.String(in.RoleSessionName),
	}
	if in.TargetExternalID != "" {
		second.ExternalId = aws.String(in.TargetExternalID)
	}
	d := in.Duration
	if d <= 0 || d > MaxChainedDuration {
		d = MaxChainedDuration
	}
	second.DurationSeconds = aws.Int32(seconds(d))
	c := out.Credentials
	if c == nil {
		return nil, identity.Errorf(identity.CodeInternal, "STS answered AssumeRole on %s without credentials", in.RoleARN)
	}
	creds := credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	out2, reqID2, err := i.call(ctx, second, creds)
	if err != nil {
		return nil, mapError(err, in.TargetRoleARN, in.RoleARN)
	}
	return assumedRole(out2, joinIDs(reqID, reqID2))
}

// call makes one AssumeRole under the per-call timeout. creds, when set,
// replace the Issuer's own credentials (role chaining).
func (i *Issuer) call(ctx context.Context, in *sts.AssumeRoleInput, creds aws.CredentialsProvider) (*sts.AssumeRoleOutput, string, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	var optFns []func(*sts.Options)
	if creds != nil {
		optFns = append(optFns, func(o *sts.Options) { o.Credentials = creds })
	}
	out, err := i.client.AssumeRole(ctx, in, optFns...)
	if err != nil {
		return nil, "", err
	}
	id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
	return out, id, nil
}

func assumedRole(out *sts.AssumeRoleOutput, reqID string) (*identity.AssumedRole, error) {
	c := out.Credentials
	if c == nil || out.AssumedRoleUser == nil {
		return nil, identity.Errorf(identity.CodeInternal, "STS answered AssumeRole without credentials or assumed-role user (request %s)", reqID)
	}
	return &identity.AssumedRole{
		Credentials: identity.Credentials{
			AccessKeyID:     aws.ToString(c.AccessKeyId),
			SecretAccessKey: aws.ToString(c.SecretAccessKey),
			SessionToken:    aws.ToString(c.SessionToken),
			Expiration:      aws.ToTime(c.Expiration),
		},
		ARN:           aws.ToString(out.AssumedRoleUser.Arn),
		AssumedRoleID: aws.ToString(out.AssumedRoleUser.AssumedRoleId),
		RequestID:     reqID,
	}, nil
}

func joinIDs(ids ...string) string {
	var out []string
	for _, id := range ids {
		if id != "" {
			out = append(out, id)
		}
	}
	return strings.Join(out, ",")
}

// seconds converts d for DurationSeconds, saturating instead of wrapping so
// an absurd duration reaches STS as out of range rather than as a small
// number.
func seconds(d time.Duration) int32 {
	if s := d / time.Second; s < math.MaxInt32 {
		return int32(s)
	}
	return math.MaxInt32
}
