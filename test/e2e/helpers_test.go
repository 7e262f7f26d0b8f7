//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/test/e2e/harness"
)

// registerCluster registers c with podid server the way an operator
// does: `podid cluster register` with the cluster's kubeconfig, which reads
// the issuer and JWKS through the API server (the issuer's own host does
// not resolve here).
func registerCluster(ctx context.Context, podid string, srv *harness.Server, c *harness.Cluster) error {
	_, err := runRegister(ctx, podid, srv, c.Name, c.Kubeconfig)
	return err
}

// runRegister runs `podid cluster register name` with kubeconfig and the
// extra flags, returning its combined output; the error includes it.
func runRegister(ctx context.Context, podid string, srv *harness.Server, name, kubeconfig string, extra ...string) ([]byte, error) {
	args := append([]string{"cluster", "register", name,
		"--kubeconfig", kubeconfig,
		"--server", srv.URL,
		"--region", region,
	}, extra...)
	cmd := exec.CommandContext(ctx, podid, args...)
	// The client commands sign with the standard AWS credential chain.
	cmd.Env = append(harness.CleanEnv(), "AWS_ACCESS_KEY_ID="+srv.Admin.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+srv.Admin.SecretAccessKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("podid %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// registerWebhook points cluster c's pod admission at url. Unlike the
// production configuration (failurePolicy Ignore, so podid cannot take pod
// creation down), the suite uses Fail: a broken webhook must fail the test
// loudly rather than quietly admit pods unmutated.
func registerWebhook(ctx context.Context, c *harness.Cluster, name, url string) error {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	optOut := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: webhook.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"},
	}}}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "pod-identity.podid.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector:       optOut,
			ObjectSelector:          optOut,
			TimeoutSeconds:          aws.Int32(10),
		}},
	}
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
	return err
}

func createNamespace(ctx context.Context, c *harness.Cluster, name string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

func createServiceAccount(ctx context.Context, c *harness.Cluster, ns, name string) error {
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// createPod creates pod in ns, or only runs admission when dryRun is set.
func createPod(ctx context.Context, c *harness.Cluster, ns string, pod *corev1.Pod, dryRun bool) (*corev1.Pod, error) {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return c.Client.CoreV1().Pods(ns).Create(ctx, pod, opts)
}

// podSpec is a pod whose containers cover the injection rules: an init
// container, a container with env and mounts of its own, and one that
// already chose its credentials (and must be left alone).
func podSpec(name, serviceAccount string) *corev1.Pod {
	const image = "registry.k8s.io/pause:3.10"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}, Annotations: map[string]string{"podid.io/e2e": "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount,
			InitContainers:     []corev1.Container{{Name: "init", Image: image}},
			Containers: []corev1.Container{
				{
					Name:         "app",
					Image:        image,
					Env:          []corev1.EnvVar{{Name: "GREETING", Value: "hello"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}},
				},
				{
					Name:  "own-credentials",
					Image: image,
					Env:   []corev1.EnvVar{{Name: webhook.EnvCredentialsFullURI, Value: "http://127.0.0.1:9911/creds"}},
				},
			},
			Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

func hasVolume(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func roleARN(name string) string { return "arn:aws:iam::" + account + ":role/e2e-" + name }

// createAssociation creates an association with the AWS SDK's EKS client,
// as users do.
func (e *environment) createAssociation(ctx context.Context, cluster, ns, sa, role string) (string, error) {
	out, err := e.eks.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
		ClusterName:    aws.String(cluster),
		Namespace:      aws.String(ns),
		ServiceAccount: aws.String(sa),
		RoleArn:        aws.String(role),
	})
	if err != nil {
		return "", fmt.Errorf("CreatePodIdentityAssociation %s/%s/%s: %w", cluster, ns, sa, err)
	}
	return aws.ToString(out.Association.AssociationId), nil
}

// workload is a namespace, service account and pod made for one test.
type workload struct {
	cluster *harness.Cluster
	ns, sa  string
	pod     *corev1.Pod
}

// newWorkload creates namespace ns, service account sa and a pod using it
// in cluster c. The pod stays Pending: there is no scheduler or kubelet.
func newWorkload(t *testing.T, c *harness.Cluster, ns, sa string) *workload {
	t.Helper()
	ctx := t.Context()
	if err := createNamespace(ctx, c, ns); err != nil {
		t.Fatalf("%s: creating namespace: %v", c.Name, err)
	}
	if err := createServiceAccount(ctx, c, ns, sa); err != nil {
		t.Fatalf("%s: creating service account: %v", c.Name, err)
	}
	pod, err := createPod(ctx, c, ns, podSpec("workload", sa), false)
	if err != nil {
		t.Fatalf("%s: creating pod: %v", c.Name, err)
	}
	return &workload{cluster: c, ns: ns, sa: sa, pod: pod}
}

// token asks the TokenRequest API for what the kubelet would mount into
// the pod: a token bound to it, for the pod identity audience.
func (w *workload) token(t *testing.T) string {
	t.Helper()
	tr, err := w.cluster.Client.CoreV1().ServiceAccounts(w.ns).CreateToken(t.Context(), w.sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{identity.Audience},
			ExpirationSeconds: aws.Int64(3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("%s: TokenRequest for pod %s/%s: %v", w.cluster.Name, w.ns, w.pod.Name, err)
	}
	return tr.Status.Token
}

// agentGet calls the agent as the AWS SDKs do: GET with the raw token as
// the Authorization header.
func agentGet(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// uniqueName returns prefix plus a random suffix, so reruns against a kept
// environment never collide.
func uniqueName(prefix string) string {
	return prefix + "-" + strings.ToLower(rand.Text()[:6])
}
