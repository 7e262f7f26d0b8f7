package main

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podid/podid/internal/k8s/k8stest"
	"github.com/podid/podid/internal/webhook"
)

const reportRole = "arn:aws:iam::111122223333:role/report"

// explainStack has an association per variant and a denial of every
// reason in the ledger.
func explainStack(t *testing.T) *cliStack {
	t.Helper()
	s := startCLIStack(t, "demo")
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
		ServiceAccount: aws.String("web"), RoleArn: aws.String("arn:aws:iam::111122223333:role/web"),
		TargetRoleArn: aws.String("arn:aws:iam::444455556666:role/web")})
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("batch"),
		ServiceAccount: aws.String("report"), RoleArn: aws.String(reportRole), DisableSessionTags: aws.Bool(true),
		Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`)})
	s.sts.DenyRole(reportRole)

	expect := func(pod, want, got string) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: got %q, want %q", pod, got, want)
		}
	}
	expect("web-1", "", s.assume(t, "demo", s.token(t, "shop", "web", "web-1"), ""))
	expect("web-2", "", s.assume(t, "demo", s.token(t, "shop", "web", "web-2"), "node-1"))
	// The agent of node-2 sends a token of a pod on node-1.
	expect("web-3", "AccessDeniedException", s.assume(t, "demo", s.token(t, "shop", "web", "web-3"), "node-2"))
	s.sts.FailNextN(2, "Throttling", 400, "Rate exceeded") // outlasts the server's one retry
	expect("web-4", "ThrottlingException", s.assume(t, "demo", s.token(t, "shop", "web", "web-4"), ""))
	expect("ghost-1", "ResourceNotFoundException", s.assume(t, "demo", s.token(t, "shop", "ghost", "ghost-1"), ""))
	expect("report-1", "AccessDeniedException", s.assume(t, "demo", s.token(t, "batch", "report", "report-1"), ""))

	old, err := s.issuer.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-old", NodeName: "node-1"}, time.Now().Add(-3*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expect("web-old", "ExpiredTokenException", s.assume(t, "demo", old, "node-1"))
	forged, err := k8stest.NewIssuer(s.issuer.URL, "RS256")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := forged.Token(k8stest.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-forged", NodeName: "node-1"}, time.Now(), time.Hour)
	expect("web-forged", "InvalidTokenException", s.assume(t, "demo", tok, "node-1"))
	return s
}

func TestExplain(t *testing.T) {
	s := explainStack(t)
	ro := &s.readOnly
	// Every denial reason of shop/web, with issuances and tags.
	s.mustRun(t, 0, ro, "explain", "--cluster", "demo", "--namespace", "shop", "--service-account", "web")
	// No association: the fix is the create command.
	s.mustRun(t, 2, ro, "explain", "--cluster", "demo", "--namespace", "shop", "--service-account", "ghost", "--events", "1")
	// Session tags disabled: external id and policy; STS denied the role.
	s.mustRun(t, 0, ro, "explain", "--cluster", "demo", "--namespace", "batch", "--service-account", "report", "--events", "1")
	s.mustRun(t, 0, ro, "explain", "--cluster", "demo", "--namespace", "batch", "--service-account", "report", "--events", "1", "-o", "json")
	s.mustRun(t, 2, ro, "explain", "--cluster", "nope", "--namespace", "shop", "--service-account", "web")
	s.mustRun(t, 1, ro, "explain", "--cluster", "demo", "--namespace", "shop")
	s.golden(t, "explain")
}

func TestExplainPod(t *testing.T) {
	s := explainStack(t)
	injected := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "uid-web-1"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web", NodeName: "node-1",
			Volumes: []corev1.Volume{{Name: webhook.VolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "pods.eks.amazonaws.com", Path: webhook.TokenPath}}}}}}},
			Containers: []corev1.Container{
				{Name: "app", Env: []corev1.EnvVar{{Name: webhook.EnvCredentialsFullURI, Value: webhook.DefaultCredentialsURI}, {Name: webhook.EnvAuthorizationTokenFile, Value: "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"}}},
				{Name: "proxy"},
			},
		},
	}
	bare := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ghost-1", Namespace: "shop", UID: "uid-ghost-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "ghost", NodeName: "node-1", Containers: []corev1.Container{{Name: "app"}}},
	}
	kube := fake.NewClientset(injected, bare)
	explain := func() *cobra.Command {
		return newExplainCmdWith(func(string, string) (kubernetes.Interface, error) { return kube, nil })
	}
	ro := &s.readOnly
	s.runWith(t, explain(), ro, "explain", "--cluster", "demo", "--namespace", "shop", "--pod", "web-1", "--events", "2")
	s.runWith(t, explain(), ro, "explain", "--cluster", "demo", "--namespace", "shop", "--pod", "ghost-1", "--events", "1")
	s.runWith(t, explain(), ro, "explain", "--cluster", "demo", "--namespace", "shop", "--pod", "web-1", "--service-account", "api")
	s.runWith(t, explain(), ro, "explain", "--cluster", "demo", "--namespace", "shop", "--pod", "gone")
	s.golden(t, "explain_pod")
}
