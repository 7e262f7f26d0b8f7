//go:build linux

package e2e

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The EKS mutation, written out from SPEC.md §4 rather than taken from the
// webhook package, so a change there cannot move the expectation with it.
const (
	wantCredentialsURI = "http://169.254.170.23/v1/credentials"
	wantMountPath      = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
	wantTokenFile      = wantMountPath + "/eks-pod-identity-token"
	wantVolume         = "eks-pod-identity-token"
	wantAudience       = "pods.eks.amazonaws.com"
	day                = 24 * 60 * 60
)

// TestWebhookMutatesPod creates the same pod twice through the real API
// server, once with a service account that has an association and once
// with one that has none, and compares what the API server stored: the two
// must differ by exactly the EKS mutation, with the API server's own
// defaulting and service-account admission applied to both.
func TestWebhookMutatesPod(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	ns := uniqueName("webhook")
	if err := createNamespace(ctx, e.a, ns); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"app", "plain"} {
		if err := createServiceAccount(ctx, e.a, ns, sa); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.createAssociation(ctx, clusterA, ns, "app", roleARN("webhook")); err != nil {
		t.Fatal(err)
	}
	if err := e.waitInjected(ctx, ns, "app"); err != nil {
		t.Fatal(err)
	}
	pods := e.a.Client.CoreV1().Pods(ns)
	for _, p := range []*corev1.Pod{podSpec("mutated", "app"), podSpec("plain", "plain")} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s: %v", p.Name, err)
		}
	}
	got, err := pods.Get(ctx, "mutated", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := pods.Get(ctx, "plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasVolume(plain, wantVolume) {
		t.Fatalf("pod of a service account without association was mutated: %+v", plain.Spec.Volumes)
	}

	want := plain.DeepCopy()
	want.Spec.ServiceAccountName = "app"
	want.Spec.DeprecatedServiceAccount = "app"
	env := []corev1.EnvVar{
		{Name: "AWS_CONTAINER_CREDENTIALS_FULL_URI", Value: wantCredentialsURI},
		{Name: "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", Value: wantTokenFile},
	}
	mount := corev1.VolumeMount{Name: wantVolume, ReadOnly: true, MountPath: wantMountPath}
	for _, cs := range [][]corev1.Container{want.Spec.InitContainers, want.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == "own-credentials" {
				continue // it set AWS_CONTAINER_CREDENTIALS_FULL_URI itself
			}
			cs[i].Env = append(cs[i].Env, env...)
			cs[i].VolumeMounts = append(cs[i].VolumeMounts, mount)
		}
	}
	// The lifetime is about a day, shortened by a per-pod jitter of at
	// most 10%; the kubelet refreshes the token long before either.
	exp := tokenExpiration(got)
	if exp == nil || *exp > day || *exp < day*9/10 {
		t.Errorf("token volume expirationSeconds = %v, want within [%d, %d]", deref(exp), day*9/10, day)
	}
	want.Spec.Volumes = append(want.Spec.Volumes, corev1.Volume{
		Name: wantVolume,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: wantAudience, ExpirationSeconds: exp, Path: "eks-pod-identity-token",
			}}},
			DefaultMode: plainProjectedMode(plain),
		}},
	})
	normalizeServiceAccountVolume(want)
	normalizeServiceAccountVolume(got)
	if diff := cmp.Diff(want.Spec, got.Spec); diff != "" {
		t.Errorf("stored pod differs from the unassociated pod by more or less than the EKS mutation (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"podid.io/e2e": "true"}, got.Annotations); diff != "" {
		t.Errorf("annotations changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"app": "mutated"}, got.Labels); diff != "" {
		t.Errorf("labels changed (-want +got):\n%s", diff)
	}

	t.Run("opt-out label", func(t *testing.T) {
		p := podSpec("opted-out", "app")
		p.Labels["podid.io/inject"] = "false"
		stored, err := pods.Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if hasVolume(stored, wantVolume) {
			t.Errorf("pod labelled podid.io/inject=false was mutated")
		}
	})
}

func tokenExpiration(pod *corev1.Pod) *int64 {
	for _, v := range pod.Spec.Volumes {
		if v.Name != wantVolume || v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
			continue
		}
		return v.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds
	}
	return nil
}

// plainProjectedMode is the defaultMode the API server gives projected
// volumes (0644), read from the service-account volume of the plain pod so
// the expectation follows the server's defaulting.
func plainProjectedMode(pod *corev1.Pod) *int32 {
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
			return v.Projected.DefaultMode
		}
	}
	mode := int32(0o644)
	return &mode
}

// normalizeServiceAccountVolume renames the API server's
// kube-api-access-<random> volume and its mounts, the one part of two
// otherwise identical pods that differs by construction.
func normalizeServiceAccountVolume(pod *corev1.Pod) {
	rename := func(name string) string {
		if strings.HasPrefix(name, "kube-api-access-") {
			return "kube-api-access"
		}
		return name
	}
	for i := range pod.Spec.Volumes {
		pod.Spec.Volumes[i].Name = rename(pod.Spec.Volumes[i].Name)
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			for j := range cs[i].VolumeMounts {
				cs[i].VolumeMounts[j].Name = rename(cs[i].VolumeMounts[j].Name)
			}
		}
	}
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
