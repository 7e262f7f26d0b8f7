package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func irsaSA(ns, name string, annotations ...string) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}}}
	for i := 0; i+1 < len(annotations); i += 2 {
		sa.Annotations[annotations[i]] = annotations[i+1]
	}
	return sa
}

func importCmd(kube kubernetes.Interface) func() *cobra.Command {
	return func() *cobra.Command {
		return newImportCmdWith(func(string, string) (kubernetes.Interface, error) { return kube, nil })
	}
}

// associationsOf returns "namespace/serviceAccount" → "role tags" of every
// association of cluster, as the server has them.
func associationsOf(t *testing.T, s *cliStack, cluster string) map[string]string {
	t.Helper()
	ctx := t.Context()
	c := s.eks(t)
	out := map[string]string{}
	p := eks.NewListPodIdentityAssociationsPaginator(c, &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String(cluster)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sum := range page.Associations {
			d, err := c.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String(cluster), AssociationId: sum.AssociationId})
			if err != nil {
				t.Fatal(err)
			}
			a := fromSDK(d.Association)
			out[a.Namespace+"/"+a.ServiceAccount] = a.RoleArn + " " + formatTags(a.Tags)
		}
	}
	return out
}

// importGolden compares the transcript with testdata/import/name.golden.
func importGolden(t *testing.T, s *cliStack, name string) {
	t.Helper()
	got := normalize(strings.ReplaceAll(s.transcript.String(), s.url, "http://SERVER"))
	path := filepath.Join("testdata", "import", name+".golden")
	if *updateCLIGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update-cli-golden to create it)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update-cli-golden rewrites it):\n%s", path, diff)
	}
}

const (
	webRole    = "arn:aws:iam::111122223333:role/web"
	apiRole    = "arn:aws:iam::111122223333:role/api"
	cartRole   = "arn:aws:iam::111122223333:role/cart"
	importTags = "podid.io/imported-from=irsa"
)

// TestImportIRSA proposes, creates and re-checks associations for a cluster
// whose ServiceAccounts cover every status.
func TestImportIRSA(t *testing.T) {
	s := startCLIStack(t, "demo")
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
		ServiceAccount: aws.String("api"), RoleArn: aws.String(apiRole)})
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
		ServiceAccount: aws.String("cart"), RoleArn: aws.String("arn:aws:iam::111122223333:role/cart-old")})
	s.createDirect(t, &eks.CreatePodIdentityAssociationInput{ClusterName: aws.String("demo"), Namespace: aws.String("shop"),
		ServiceAccount: aws.String("chained"), RoleArn: aws.String(webRole), TargetRoleArn: aws.String("arn:aws:iam::444455556666:role/web")})
	before := associationsOf(t, s, "demo")

	kube := fake.NewClientset(
		irsaSA("shop", "web", irsaRoleAnnotation, webRole, irsaRegionalEndpointAnnotation, "true", irsaTokenExpirationAnnotation, "86400"),
		irsaSA("shop", "api", irsaRoleAnnotation, apiRole),
		irsaSA("shop", "cart", irsaRoleAnnotation, cartRole),
		irsaSA("shop", "chained", irsaRoleAnnotation, webRole),
		irsaSA("shop", "plain"),
		irsaSA("shop", "default", "kubernetes.io/description", "not IRSA"),
		irsaSA("batch", "report", irsaRoleAnnotation, " "+reportRole+" ", irsaAudienceAnnotation, "sts.amazonaws.com"),
		irsaSA("batch", "empty", irsaRoleAnnotation, ""),
		irsaSA("batch", "bad", irsaRoleAnnotation, "arn:aws:iam::123:role/short-account"),
		irsaSA("batch", "user", irsaRoleAnnotation, "arn:aws:iam::111122223333:user/alice"),
		irsaSA("batch", "Bad_Name", irsaRoleAnnotation, reportRole),
	)
	cmd := importCmd(kube)
	admin := &s.admin

	// Dry runs change nothing; the conflicts make them exit 4.
	run := func(code int, args ...string) cliResult {
		t.Helper()
		r := s.runWith(t, cmd(), admin, append([]string{"import", "irsa"}, args...)...)
		if r.code != code {
			t.Fatalf("podid import irsa %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.out, r.err)
		}
		return r
	}
	run(4, "--cluster", "demo")
	run(4, "--cluster", "demo", "-o", "json")
	run(0, "--cluster", "demo", "--namespace", "batch", "-o", "yaml")
	if diff := cmp.Diff(before, associationsOf(t, s, "demo")); diff != "" {
		t.Fatalf("a dry run changed associations (-before +after):\n%s", diff)
	}

	run(4, "--cluster", "demo", "--create")
	want := map[string]string{
		"shop/web":     webRole + " " + importTags,
		"batch/report": reportRole + " " + importTags,
	}
	for k, v := range before {
		want[k] = v
	}
	if diff := cmp.Diff(want, associationsOf(t, s, "demo")); diff != "" {
		t.Fatalf("after --create (-want +got):\n%s", diff)
	}

	// Running again finds what it created and creates nothing.
	r := run(4, "--cluster", "demo", "--create")
	if strings.Contains(r.out, importCreated) {
		t.Errorf("the re-run created something:\n%s", r.out)
	}
	if diff := cmp.Diff(want, associationsOf(t, s, "demo")); diff != "" {
		t.Fatalf("after the re-run (-want +got):\n%s", diff)
	}
	importGolden(t, s, "irsa")
}

// TestImportIRSAIdempotent creates everything, then a re-run reports every
// ServiceAccount as EXISTS and exits 0.
func TestImportIRSAIdempotent(t *testing.T) {
	s := startCLIStack(t, "demo")
	kube := fake.NewClientset(
		irsaSA("shop", "web", irsaRoleAnnotation, webRole),
		irsaSA("shop", "api", irsaRoleAnnotation, apiRole),
		irsaSA("other", "web", irsaRoleAnnotation, webRole),
	)
	cmd := importCmd(kube)
	for _, args := range [][]string{
		{"import", "irsa", "--cluster", "demo", "--namespace", "shop", "--create"},
		{"import", "irsa", "--cluster", "demo", "--namespace", "shop", "--create", "-o", "json"},
		{"import", "irsa", "--cluster", "demo", "--namespace", "shop"},
	} {
		if r := s.runWith(t, cmd(), &s.admin, args...); r.code != 0 {
			t.Fatalf("podid %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.err)
		}
	}
	want := map[string]string{"shop/web": webRole + " " + importTags, "shop/api": apiRole + " " + importTags}
	if diff := cmp.Diff(want, associationsOf(t, s, "demo")); diff != "" {
		t.Fatalf("associations (-want +got):\n%s", diff)
	}
	importGolden(t, s, "irsa_idempotent")
}

// TestImportIRSAErrors covers what stops an import or a create.
func TestImportIRSAErrors(t *testing.T) {
	s := startCLIStack(t, "demo")
	kube := fake.NewClientset(irsaSA("shop", "web", irsaRoleAnnotation, webRole))
	cmd := importCmd(kube)
	check := func(code int, args ...string) cliResult {
		t.Helper()
		r := s.runWith(t, cmd(), &s.admin, append([]string{"import", "irsa"}, args...)...)
		if r.code != code {
			t.Fatalf("podid import irsa %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.out, r.err)
		}
		return r
	}
	// Not registered: everything is skipped, and the fix is named.
	check(0, "--cluster", "nope", "--create")
	check(1)
	check(1, "--cluster", "demo", "--namespace", "Not_A_Namespace")
	check(0, "--cluster", "demo", "--namespace", "empty")

	// A read-only key can propose but not create.
	r := s.runWith(t, cmd(), &s.readOnly, "import", "irsa", "--cluster", "demo", "--create")
	if r.code != 3 || !strings.Contains(r.out, importFailed) {
		t.Fatalf("read-only --create: exit %d, want 3 with a FAILED row\n%s%s", r.code, r.out, r.err)
	}
	if got := associationsOf(t, s, "demo"); len(got) != 0 {
		t.Fatalf("a failed import created %v", got)
	}

	// The kubeconfig's user may not list ServiceAccounts.
	forbidden := fake.NewClientset()
	forbidden.PrependReactor("list", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "", errors.New(`User "dev" cannot list resource "serviceaccounts" in API group "" at the cluster scope`))
	})
	r = s.runWith(t, importCmd(forbidden)(), &s.admin, "import", "irsa", "--cluster", "demo")
	if r.code != 3 || !strings.Contains(r.err, `"list" on serviceaccounts in all namespaces`) {
		t.Fatalf("forbidden list: exit %d, want 3 naming the permission\n%s", r.code, r.err)
	}
	importGolden(t, s, "irsa_errors")
}
