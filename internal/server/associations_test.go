package server_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
)

func TestAssociationCRUDWithSDK(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	ctx := context.Background()
	c := e.eksClient(e.keys[auth.ScopeAdmin])

	out, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName:        aws.String("cluster-a"),
		Namespace:          aws.String("shop"),
		ServiceAccount:     aws.String("checkout"),
		RoleArn:            aws.String(testRole),
		Tags:               map[string]string{"team": "payments"},
		ClientRequestToken: aws.String("create-1"),
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	a := out.Association
	id := aws.ToString(a.AssociationId)
	if !strings.HasPrefix(id, "a-") || len(id) != 19 || strings.ToLower(id) != id {
		t.Errorf("association id %q is not a- plus 17 lowercase alphanumerics", id)
	}
	wantARN := "arn:aws:eks:us-east-1:111122223333:podidentityassociation/cluster-a/" + id
	if got := aws.ToString(a.AssociationArn); got != wantARN {
		t.Errorf("associationArn = %q, want %q", got, wantARN)
	}
	if a.CreatedAt == nil || a.CreatedAt.IsZero() || a.ModifiedAt == nil {
		t.Errorf("timestamps not decoded: createdAt=%v modifiedAt=%v", a.CreatedAt, a.ModifiedAt)
	}
	if diff := cmp.Diff(map[string]string{"team": "payments"}, a.Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}

	// The SDK fills clientRequestToken itself; an explicit retry with the
	// same token is idempotent.
	again, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), Namespace: aws.String("shop"), ServiceAccount: aws.String("checkout"),
		RoleArn: aws.String(testRole), Tags: map[string]string{"team": "payments"}, ClientRequestToken: aws.String("create-1"),
	})
	if err != nil || aws.ToString(again.Association.AssociationId) != id {
		t.Fatalf("idempotent retry = %v, %v; want the same association %s", again, err, id)
	}

	desc, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id)})
	if err != nil {
		t.Fatalf("describe: %v", err)
	}
	if got := aws.ToString(desc.Association.RoleArn); got != testRole {
		t.Errorf("described roleArn = %q", got)
	}

	upd, err := c.UpdatePodIdentityAssociation(ctx, &eks.UpdatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id),
		RoleArn:       aws.String("arn:aws:iam::111122223333:role/checkout-v2"),
		TargetRoleArn: aws.String("arn:aws:iam::444455556666:role/target"),
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if got := aws.ToString(upd.Association.RoleArn); got != "arn:aws:iam::111122223333:role/checkout-v2" {
		t.Errorf("updated roleArn = %q", got)
	}
	if aws.ToString(upd.Association.TargetRoleArn) == "" || aws.ToString(upd.Association.ExternalId) == "" {
		t.Errorf("target role update lost: targetRoleArn=%q externalId=%q", aws.ToString(upd.Association.TargetRoleArn), aws.ToString(upd.Association.ExternalId))
	}
	if !upd.Association.ModifiedAt.After(*upd.Association.CreatedAt) && !upd.Association.ModifiedAt.Equal(*upd.Association.CreatedAt) {
		t.Errorf("modifiedAt %v before createdAt %v", upd.Association.ModifiedAt, upd.Association.CreatedAt)
	}

	del, err := c.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id)})
	if err != nil || aws.ToString(del.Association.AssociationId) != id {
		t.Fatalf("delete = %v, %v", del, err)
	}
	_, err = c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id)})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("describe after delete: %v, want ResourceNotFoundException", err)
	}
}

func TestAssociationErrorsWithSDK(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	ctx := context.Background()
	c := e.eksClient(e.keys[auth.ScopeAdmin])
	create := func(cluster, ns, sa, role string) error {
		_, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
			ClusterName: aws.String(cluster), Namespace: aws.String(ns), ServiceAccount: aws.String(sa), RoleArn: aws.String(role),
		})
		return err
	}
	if err := create("cluster-a", "shop", "checkout", testRole); err != nil {
		t.Fatal(err)
	}
	tooManyTags := map[string]string{}
	for i := range 51 {
		tooManyTags[fmt.Sprintf("k%d", i)] = "v"
	}

	for _, tc := range []struct {
		name      string
		call      func() error
		want      any    // pointer to the typed SDK error
		wantInMsg string // the message names the problem
	}{
		{"duplicate", func() error { return create("cluster-a", "shop", "checkout", testRole) }, new(*types.ResourceInUseException), "checkout"},
		{"unknown cluster", func() error { return create("nope", "shop", "checkout", testRole) }, new(*types.ResourceNotFoundException), "nope"},
		{"bad role arn", func() error { return create("cluster-a", "shop", "x", "arn:aws:s3:::bucket") }, new(*types.InvalidParameterException), "roleArn"},
		{"bad namespace", func() error { return create("cluster-a", "Shop_NS", "x", testRole) }, new(*types.InvalidParameterException), "namespace"},
		{"bad service account", func() error { return create("cluster-a", "shop", "-x-", testRole) }, new(*types.InvalidParameterException), "serviceAccount"},
		{"too many tags", func() error {
			_, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
				ClusterName: aws.String("cluster-a"), Namespace: aws.String("t"), ServiceAccount: aws.String("t"), RoleArn: aws.String(testRole), Tags: tooManyTags,
			})
			return err
		}, new(*types.InvalidParameterException), "50"},
		{"policy without disableSessionTags", func() error {
			_, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
				ClusterName: aws.String("cluster-a"), Namespace: aws.String("p"), ServiceAccount: aws.String("p"), RoleArn: aws.String(testRole), Policy: aws.String(`{"Version":"2012-10-17"}`),
			})
			return err
		}, new(*types.InvalidParameterException), "disableSessionTags"},
		{"unknown association", func() error {
			_, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String("a-0000000000000000a")})
			return err
		}, new(*types.ResourceNotFoundException), "a-0000000000000000a"},
		{"malformed association id", func() error {
			_, err := c.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String("assoc-1")})
			return err
		}, new(*types.InvalidParameterException), "associationId"},
		{"max results out of range", func() error {
			_, err := c.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a"), MaxResults: aws.Int32(101)})
			return err
		}, new(*types.InvalidParameterException), "maxResults"},
		{"forged next token", func() error {
			_, err := c.ListPodIdentityAssociations(ctx, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a"), NextToken: aws.String("bm90IGEgdG9rZW4")})
			return err
		}, new(*types.InvalidParameterException), "nextToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("call succeeded")
			}
			if !errors.As(err, tc.want) {
				t.Fatalf("error %T %v is not %T", errors.Unwrap(err), err, tc.want)
			}
			var ae smithy.APIError
			if errors.As(err, &ae) && !strings.Contains(ae.ErrorMessage(), tc.wantInMsg) {
				t.Errorf("message %q does not mention %q", ae.ErrorMessage(), tc.wantInMsg)
			}
		})
	}
	// None of the failed calls changed the store.
	as, err := e.store.ListAssociations(ctx, identity.AssociationFilter{Cluster: "cluster-a"})
	if err != nil || len(as) != 1 {
		t.Errorf("cluster-a has %d associations (%v), want 1", len(as), err)
	}
}

func TestListAssociationsPaginatesWithSDK(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	ctx := context.Background()
	c := e.eksClient(e.keys[auth.ScopeAdmin])
	want := map[string]bool{}
	for i := range 250 {
		ns := []string{"alpha", "beta"}[i%2]
		sa := fmt.Sprintf("sa-%03d", i)
		if _, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
			ClusterName: aws.String("cluster-a"), Namespace: aws.String(ns), ServiceAccount: aws.String(sa), RoleArn: aws.String(testRole),
		}); err != nil {
			t.Fatal(err)
		}
		want[ns+"/"+sa] = true
	}
	// One in another cluster must not show up.
	if _, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-b"), Namespace: aws.String("alpha"), ServiceAccount: aws.String("sa-000"), RoleArn: aws.String(testRole),
	}); err != nil {
		t.Fatal(err)
	}

	list := func(in *eks.ListPodIdentityAssociationsInput) (got []string, pages int) {
		t.Helper()
		p := eks.NewListPodIdentityAssociationsPaginator(c, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range page.Associations {
				if aws.ToString(s.ClusterName) != "cluster-a" {
					t.Errorf("summary of cluster %q", aws.ToString(s.ClusterName))
				}
				got = append(got, aws.ToString(s.Namespace)+"/"+aws.ToString(s.ServiceAccount))
			}
		}
		return got, pages
	}

	got, pages := list(&eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a"), MaxResults: aws.Int32(100)})
	if pages != 3 || len(got) != 250 {
		t.Errorf("listed %d associations in %d pages, want 250 in 3", len(got), pages)
	}
	seen := map[string]bool{}
	for _, g := range got {
		if seen[g] {
			t.Errorf("%s listed twice", g)
		}
		seen[g] = true
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("listed set (-want +got):\n%s", diff)
	}

	got, _ = list(&eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a"), Namespace: aws.String("beta"), MaxResults: aws.Int32(7)})
	if len(got) != 125 {
		t.Errorf("namespace filter listed %d, want 125", len(got))
	}
	got, _ = list(&eks.ListPodIdentityAssociationsInput{ClusterName: aws.String("cluster-a"), Namespace: aws.String("alpha"), ServiceAccount: aws.String("sa-010")})
	sort.Strings(got)
	if diff := cmp.Diff([]string{"alpha/sa-010"}, got); diff != "" {
		t.Errorf("namespace+serviceAccount filter (-want +got):\n%s", diff)
	}
}
