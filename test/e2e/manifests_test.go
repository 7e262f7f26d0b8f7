//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/podid/podid/test/e2e/harness"
)

// overlaysDir holds the deploy overlays, relative to the repository root.
var overlaysDir = filepath.Join("deploy", "overlays")

// TestManifestsApply renders every deploy overlay with the kustomize API
// (what kubectl apply -k uses) and applies each object to a real API server
// with server-side apply in dry-run mode, as `kubectl apply --server-side
// --dry-run=server` does: every field is validated by the server, admission
// included, and nothing is stored. No kubectl is needed.
func TestManifestsApply(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	overlays, err := os.ReadDir(filepath.Join(root, overlaysDir))
	if os.IsNotExist(err) {
		t.Skipf("no deploy manifests yet (%s/ does not exist)", overlaysDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t)
	c := e.b // cluster B has no webhook of the tests in the way
	ctx := t.Context()
	// deploy/README.md has users create the namespace first, for the
	// Secrets; a dry run of the Namespace object would not create it.
	if err := createNamespace(ctx, c, "podid-system"); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.REST)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client.Discovery()))

	for _, o := range overlays {
		if !o.IsDir() {
			continue
		}
		t.Run(o.Name(), func(t *testing.T) {
			resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, overlaysDir, o.Name()))
			if err != nil {
				t.Fatalf("kustomize: %v", err)
			}
			if resources.Size() == 0 {
				t.Fatal("the overlay renders no objects")
			}
			for _, r := range resources.Resources() {
				m, err := r.Map()
				if err != nil {
					t.Fatal(err)
				}
				u := &unstructured.Unstructured{Object: m}
				gvk := u.GroupVersionKind()
				what := gvk.Kind + " " + u.GetNamespace() + "/" + u.GetName()
				mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Errorf("%s: the API server does not serve %s: %v", what, gvk, err)
					continue
				}
				var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
				if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
					if u.GetNamespace() == "" {
						t.Errorf("%s: namespaced object without a namespace", what)
						continue
					}
					ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
				}
				_, err = ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "podid-e2e", Force: true, DryRun: []string{metav1.DryRunAll}})
				if err != nil {
					t.Errorf("%s: server-side apply (dry run): %v", what, err)
				}
			}
		})
	}
}
