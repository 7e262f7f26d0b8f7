package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/podid/podid/internal/auth"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/server"
)

// TestPolicyRulesThroughSDK: creates and updates that break a policy rule
// are refused with a typed error naming the rule.
func TestPolicyRulesThroughSDK(t *testing.T) {
	e := newEnvWith(t, func(cfg *identity.Config, _ *server.Config) {
		cfg.Policy = &identity.Policy{Rules: []identity.PolicyRule{
			{Name: "shop-roles", Clusters: []string{"cluster-*"}, Namespaces: []string{"shop"}, RoleARNs: []string{"arn:aws:iam::111122223333:role/check*"}},
		}}
	})
	e.registerFixtureClusters(t)
	ctx := context.Background()
	c := e.eksClient(e.keys[auth.ScopeAdmin])
	id := e.createAssociation(t, "cluster-a", "shop", "checkout", nil) // testRole matches check*

	var ipe *types.InvalidParameterException
	_, err := c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), Namespace: aws.String("shop"), ServiceAccount: aws.String("admin"),
		RoleArn: aws.String("arn:aws:iam::111122223333:role/admin"),
	})
	if !errors.As(err, &ipe) || !strings.Contains(aws.ToString(ipe.Message), "shop-roles") {
		t.Errorf("create with a role outside the rule: %v", err)
	}
	_, err = c.UpdatePodIdentityAssociation(ctx, &eks.UpdatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id), RoleArn: aws.String("arn:aws:iam::111122223333:role/admin"),
	})
	if !errors.As(err, &ipe) || !strings.Contains(aws.ToString(ipe.Message), "shop-roles") {
		t.Errorf("update to a role outside the rule: %v", err)
	}
	_, err = c.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String("cluster-a"), Namespace: aws.String("payments"), ServiceAccount: aws.String("api"),
		RoleArn: aws.String(testRole),
	})
	if !errors.As(err, &ipe) || !strings.Contains(aws.ToString(ipe.Message), "no policy rule covers namespace payments") {
		t.Errorf("create in a namespace no rule covers: %v", err)
	}
	desc, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String("cluster-a"), AssociationId: aws.String(id)})
	if err != nil || aws.ToString(desc.Association.RoleArn) != testRole {
		t.Errorf("the refused update changed the association: %v, %v", desc, err)
	}
}
