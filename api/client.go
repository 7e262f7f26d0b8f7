package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Client calls podid server's EKS Auth and admin APIs, signing each request
// with SigV4 the way the AWS SDKs do.
type Client struct {
	// Endpoint is the server's base URL, e.g. https://podid.example:8443.
	Endpoint string
	// Credentials sign the requests; the key's scope must allow the call.
	Credentials aws.CredentialsProvider
	// Region is the signing region; any non-empty region is accepted.
	Region string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now; tests may pin the signing time.
	Now func() time.Time

	signerOnce sync.Once
	signer     *v4.Signer
}

// APIError is an error response of the server in the AWS shape.
type APIError struct {
	StatusCode int
	Type       string
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Type, e.StatusCode, e.Message)
}

// ErrorType returns the AWS error name of err, or "" if err is not an
// *APIError.
func ErrorType(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Type
	}
	return ""
}

// AssumeRoleForPodIdentity exchanges a pod's service-account token for the
// credentials of its association's role.
func (c *Client) AssumeRoleForPodIdentity(ctx context.Context, clusterName string, in AssumeRoleForPodIdentityRequest) (*AssumeRoleForPodIdentityResponse, error) {
	var out AssumeRoleForPodIdentityResponse
	err := c.do(ctx, "eks-auth", http.MethodPost, "/clusters/"+url.PathEscape(clusterName)+"/assume-role-for-pod-identity", nil, in, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RegisterCluster registers a cluster with the server.
func (c *Client) RegisterCluster(ctx context.Context, in Cluster) (*Cluster, error) {
	var out ClusterResponse
	if err := c.do(ctx, "eks", http.MethodPost, AdminPrefix+"/clusters", nil, in, &out); err != nil {
		return nil, err
	}
	return &out.Cluster, nil
}

// UpdateCluster replaces a cluster's issuer and keys.
func (c *Client) UpdateCluster(ctx context.Context, in Cluster) (*Cluster, error) {
	var out ClusterResponse
	if err := c.do(ctx, "eks", http.MethodPut, AdminPrefix+"/clusters/"+url.PathEscape(in.Name), nil, in, &out); err != nil {
		return nil, err
	}
	return &out.Cluster, nil
}

// DescribeCluster returns one cluster.
func (c *Client) DescribeCluster(ctx context.Context, name string) (*Cluster, error) {
	var out ClusterResponse
	if err := c.do(ctx, "eks", http.MethodGet, AdminPrefix+"/clusters/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Cluster, nil
}

// ListClusters returns every registered cluster.
func (c *Client) ListClusters(ctx context.Context) ([]Cluster, error) {
	var out ListClustersResponse
	if err := c.do(ctx, "eks", http.MethodGet, AdminPrefix+"/clusters", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Clusters, nil
}

// DeleteCluster deletes a cluster and its associations.
func (c *Client) DeleteCluster(ctx context.Context, name string) error {
	return c.do(ctx, "eks", http.MethodDelete, AdminPrefix+"/clusters/"+url.PathEscape(name), nil, nil, &ClusterResponse{})
}

// ListAuditEvents returns one page of the audit ledger, newest first.
// cluster may be empty; maxResults 0 means the server's default.
func (c *Client) ListAuditEvents(ctx context.Context, cluster string, maxResults int, nextToken string) (*ListAuditResponse, error) {
	q := url.Values{}
	if cluster != "" {
		q.Set("cluster", cluster)
	}
	if maxResults > 0 {
		q.Set("maxResults", strconv.Itoa(maxResults))
	}
	if nextToken != "" {
		q.Set("nextToken", nextToken)
	}
	var out ListAuditResponse
	if err := c.do(ctx, "eks", http.MethodGet, AdminPrefix+"/audit", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, service, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	u := strings.TrimRight(c.Endpoint, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.sign(ctx, req, service, body); err != nil {
		return err
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb ErrorBody
		_ = json.Unmarshal(raw, &eb)
		e := &APIError{StatusCode: resp.StatusCode, Type: resp.Header.Get("X-Amzn-ErrorType"), Message: eb.Message}
		if e.Type == "" {
			e.Type = eb.Type
		}
		// Some AWS front ends append ":<url>" to the header value.
		e.Type, _, _ = strings.Cut(e.Type, ":")
		if e.Type == "" {
			e.Type = "UnknownError"
			e.Message = strings.TrimSpace(string(raw))
		}
		return e
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding response: %w", err)
	}
	return nil
}

func (c *Client) sign(ctx context.Context, req *http.Request, service string, body []byte) error {
	if c.Credentials == nil {
		return errors.New("api: Client.Credentials is not set")
	}
	region := c.Region
	if region == "" {
		region = "us-east-1"
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	// The signer caches derived keys per access key id, so it lives with the
	// client (one set of credentials) rather than in a package variable.
	c.signerOnce.Do(func() { c.signer = v4.NewSigner() })
	return sign(ctx, c.signer, req, c.Credentials, service, region, body, now())
}

// SignRequest signs req with SigV4 for service and region, as the AWS SDKs
// do; body must be the request's whole body.
func SignRequest(ctx context.Context, req *http.Request, creds aws.CredentialsProvider, service, region string, body []byte, at time.Time) error {
	return sign(ctx, v4.NewSigner(), req, creds, service, region, body, at)
}

func sign(ctx context.Context, signer *v4.Signer, req *http.Request, creds aws.CredentialsProvider, service, region string, body []byte, at time.Time) error {
	c, err := creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("retrieving credentials: %w", err)
	}
	sum := sha256.Sum256(body)
	return signer.SignHTTP(ctx, c, req, hex.EncodeToString(sum[:]), service, region, at)
}
