package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
)

// seenRequest is what the fake EKS server decoded from a verified request.
type seenRequest struct {
	Method, Path string
	Query        map[string]string
	Principal    string
}

// newFakeEKS is an httptest server that verifies every call with v (service
// "eks") and answers with a canned association, or with the AWS error shape
// on a failed verification. It runs on the real clock because the SDK signs
// with it.
func newFakeEKS(t *testing.T, v *Verifier) (*httptest.Server, func() []seenRequest) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []seenRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := v.Verify(r, body, "eks")
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Amzn-ErrorType", ae.Type)
			w.WriteHeader(ae.StatusCode())
			json.NewEncoder(w).Encode(map[string]string{"__type": ae.Type, "message": ae.Message})
			return
		}
		q := map[string]string{}
		for k := range r.URL.Query() {
			q[k] = r.URL.Query().Get(k)
		}
		mu.Lock()
		seen = append(seen, seenRequest{Method: r.Method, Path: r.URL.Path, Query: q, Principal: p.Name})
		mu.Unlock()

		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/pod-identity-associations") {
			io.WriteString(w, `{"associations":[{"clusterName":"prod","namespace":"a b","serviceAccount":"app","associationId":"a-0123456789abcdefg"}],"nextToken":"n+/="}`)
			return
		}
		io.WriteString(w, `{"association":{"clusterName":"prod","namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app","associationId":"a-0123456789abcdefg","createdAt":1714564800}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), seen...)
	}
}

func newEKSClient(srv *httptest.Server, id, secret string) *eks.Client {
	return eks.New(eks.Options{
		Region:           "us-west-2",
		Credentials:      credentials.NewStaticCredentialsProvider(id, secret, ""),
		BaseEndpoint:     aws.String(srv.URL),
		HTTPClient:       srv.Client(),
		RetryMaxAttempts: 1,
	})
}

func TestVerifyEKSClient(t *testing.T) {
	v := &Verifier{Keys: testKeyring(t)}
	srv, seen := newFakeEKS(t, v)
	client := newEKSClient(srv, adminKey.AccessKeyID, adminKey.SecretAccessKey)
	ctx := context.Background()

	desc, err := client.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{
		ClusterName:   aws.String("prod"),
		AssociationId: aws.String("a-0123456789abcdefg"),
	})
	if err != nil {
		t.Fatalf("DescribePodIdentityAssociation: %v", err)
	}
	if got := aws.ToString(desc.Association.RoleArn); got != "arn:aws:iam::111122223333:role/app" {
		t.Errorf("RoleArn = %q", got)
	}

	list, err := client.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{
		ClusterName:    aws.String("prod"),
		Namespace:      aws.String("a b&c=d"),
		ServiceAccount: aws.String("app~x"),
		MaxResults:     aws.Int32(10),
		NextToken:      aws.String("abc+def/ghi=="),
	})
	if err != nil {
		t.Fatalf("ListPodIdentityAssociations: %v", err)
	}
	if got := aws.ToString(list.NextToken); got != "n+/=" {
		t.Errorf("NextToken = %q", got)
	}

	// A cluster name the EKS model forbids still has to verify: the SDK
	// escapes it into the path, and the signer escapes it once more.
	if _, err := client.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{
		ClusterName:   aws.String("my cluster/x+y"),
		AssociationId: aws.String("a-0123456789abcdefg"),
	}); err != nil {
		t.Fatalf("DescribePodIdentityAssociation with an odd cluster name: %v", err)
	}

	want := []seenRequest{
		{Method: "GET", Path: "/clusters/prod/pod-identity-associations/a-0123456789abcdefg", Query: map[string]string{}, Principal: "ops"},
		{Method: "GET", Path: "/clusters/prod/pod-identity-associations", Query: map[string]string{
			"namespace": "a b&c=d", "serviceAccount": "app~x", "maxResults": "10", "nextToken": "abc+def/ghi==",
		}, Principal: "ops"},
		{Method: "GET", Path: "/clusters/my cluster/x+y/pod-identity-associations/a-0123456789abcdefg", Query: map[string]string{}, Principal: "ops"},
	}
	if diff := cmp.Diff(want, seen()); diff != "" {
		t.Errorf("requests seen by the server (-want +got):\n%s", diff)
	}
}

func TestVerifyEKSClientRejected(t *testing.T) {
	v := &Verifier{Keys: testKeyring(t)}
	srv, seen := newFakeEKS(t, v)
	tests := []struct {
		name       string
		id, secret string
		want       string
	}{
		{"wrong secret", adminKey.AccessKeyID, "0123456789abcdefghijABCDEFGHIJ0123456789", ErrInvalidSignature},
		{"unknown key", "PODIDNOSUCHKEY000001", adminKey.SecretAccessKey, ErrUnrecognizedClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newEKSClient(srv, tt.id, tt.secret)
			_, err := client.DescribePodIdentityAssociation(context.Background(), &eks.DescribePodIdentityAssociationInput{
				ClusterName:   aws.String("prod"),
				AssociationId: aws.String("a-0123456789abcdefg"),
			})
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want an API error", err)
			}
			if apiErr.ErrorCode() != tt.want {
				t.Errorf("ErrorCode = %q (%s), want %q", apiErr.ErrorCode(), apiErr.ErrorMessage(), tt.want)
			}
		})
	}
	if n := len(seen()); n != 0 {
		t.Errorf("server accepted %d requests", n)
	}
}
