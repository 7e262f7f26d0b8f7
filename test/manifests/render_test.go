package manifests

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// repoRoot is the repository root, relative to this package.
const repoRoot = "../.."

// deployDir holds the kustomize base, components and overlays.
var deployDir = filepath.Join(repoRoot, "deploy")

// namespace is where the base puts every namespaced object.
const namespace = "podid-system"

// object is one rendered manifest, decoded into its API type.
type object struct {
	gvk  string // "apps/v1 Deployment", "v1 Service"
	name string
	ns   string
	obj  any // a pointer to the typed object, e.g. *appsv1.Deployment
}

func (o object) String() string {
	if o.ns == "" {
		return o.gvk + " " + o.name
	}
	return o.gvk + " " + o.ns + "/" + o.name
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor that
// the manifests use. Decoding strictly into it catches a misspelt field; a
// field the manifests start using must be added here.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path,omitempty"`
			Interval string `json:"interval,omitempty"`
			Scheme   string `json:"scheme,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// newObject returns an empty object of the API type for apiVersion and
// kind, and whether that kind is cluster-scoped. Kinds not listed here are
// refused, so a new kind in the manifests needs a deliberate entry.
var newObject = map[string]struct {
	make          func() any
	clusterScoped bool
}{
	"v1 Namespace":             {func() any { return new(corev1.Namespace) }, true},
	"v1 ServiceAccount":        {func() any { return new(corev1.ServiceAccount) }, false},
	"v1 Service":               {func() any { return new(corev1.Service) }, false},
	"v1 ConfigMap":             {func() any { return new(corev1.ConfigMap) }, false},
	"v1 PersistentVolumeClaim": {func() any { return new(corev1.PersistentVolumeClaim) }, false},
	"apps/v1 Deployment":       {func() any { return new(appsv1.Deployment) }, false},
	"apps/v1 DaemonSet":        {func() any { return new(appsv1.DaemonSet) }, false},
	"policy/v1 PodDisruptionBudget": {
		func() any { return new(policyv1.PodDisruptionBudget) }, false},
	"rbac.authorization.k8s.io/v1 Role":               {func() any { return new(rbacv1.Role) }, false},
	"rbac.authorization.k8s.io/v1 RoleBinding":        {func() any { return new(rbacv1.RoleBinding) }, false},
	"rbac.authorization.k8s.io/v1 ClusterRole":        {func() any { return new(rbacv1.ClusterRole) }, true},
	"rbac.authorization.k8s.io/v1 ClusterRoleBinding": {func() any { return new(rbacv1.ClusterRoleBinding) }, true},
	"admissionregistration.k8s.io/v1 MutatingWebhookConfiguration": {
		func() any { return new(admissionv1.MutatingWebhookConfiguration) }, true},
	"monitoring.coreos.com/v1 ServiceMonitor": {func() any { return new(serviceMonitor) }, false},
}

// render builds the kustomization in dir (relative to this package) with
// the kustomize API, as "kubectl kustomize" does, and decodes every object
// strictly: an unknown or duplicate field, a wrong type or an unknown kind
// fails.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	for _, r := range rm.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: encoding %s: %v", dir, r.CurId(), err)
		}
		o, err := decode(data)
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		objs = append(objs, o)
	}
	if t.Failed() {
		t.FailNow()
	}
	return objs
}

// decode decodes one object strictly into its API type.
func decode(data []byte) (object, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return object{}, err
	}
	o := object{gvk: tm.APIVersion + " " + tm.Kind, name: tm.Metadata.Name, ns: tm.Metadata.Namespace}
	nt, ok := newObject[o.gvk]
	if !ok {
		return object{}, fmt.Errorf("%s: kind not expected in podid's manifests", o)
	}
	o.obj = nt.make()
	strictErrs, err := json.UnmarshalStrict(data, o.obj)
	if err != nil {
		return object{}, fmt.Errorf("%s: %v", o, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return object{}, fmt.Errorf("%s: %s", o, strings.Join(msgs, "; "))
	}
	switch {
	case o.name == "":
		return object{}, fmt.Errorf("%s: no metadata.name", o)
	case nt.clusterScoped && o.ns != "":
		return object{}, fmt.Errorf("%s: cluster-scoped but has namespace %q", o, o.ns)
	case !nt.clusterScoped && o.ns != namespace:
		return object{}, fmt.Errorf("%s: namespace %q, want %q", o, o.ns, namespace)
	}
	return o, nil
}

// find returns the object of type T named name, failing the test when
// there is none.
func find[T any](t testing.TB, objs []object, name string) *T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok && o.name == name {
			return v
		}
	}
	t.Fatalf("no %T named %q in the rendered manifests", *new(T), name)
	return nil
}

// all returns every object of type T.
func all[T any](objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// has reports whether there is an object of type T named name.
func has[T any](objs []object, name string) bool {
	return slices.ContainsFunc(objs, func(o object) bool {
		_, ok := o.obj.(*T)
		return ok && o.name == name
	})
}

// workload is a pod template with the object that owns it.
type workload struct {
	kind, name string
	labels     map[string]string // of the pod template
	spec       *corev1.PodSpec
}

// workloads returns the pod templates of every Deployment and DaemonSet.
func workloads(objs []object) []workload {
	var ws []workload
	for _, d := range all[appsv1.Deployment](objs) {
		ws = append(ws, workload{"Deployment", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec})
	}
	for _, d := range all[appsv1.DaemonSet](objs) {
		ws = append(ws, workload{"DaemonSet", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec})
	}
	return ws
}
