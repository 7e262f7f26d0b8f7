// Package manifests checks podid's deploy manifests (deploy/): every overlay
// renders with the kustomize API, every object decodes strictly into its
// Kubernetes API type, and the properties podid depends on hold, down to
// every --flag in a container's args existing in the real binary's --help.
package manifests

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names the components and the user share.
const (
	serverName  = "podid-server"
	agentName   = "podid-agent"
	webhookName = "podid-webhook"
	webhookConf = "podid-pod-identity-webhook"
	image       = "ghcr.io/podid/podid:latest"
	devImage    = "podid:dev"
)

// userSecrets are the Secrets the user creates (deploy/README.md says how);
// no other Secret may be referenced from a pod.
var userSecrets = []string{
	"podid-server-keys", "podid-server-tls", "podid-server-aws",
	"podid-agent-key", "podid-webhook-key", "podid-postgres",
}

// variant is one kustomization to render and check.
type variant struct {
	name     string
	dir      string
	postgres bool // the server runs on PostgreSQL, else SQLite
	dev      bool // local image
	monitor  bool // includes the servicemonitor component
}

var variants = []variant{
	{name: "sqlite", dir: filepath.Join(deployDir, "overlays", "sqlite")},
	{name: "postgres", dir: filepath.Join(deployDir, "overlays", "postgres"), postgres: true},
	{name: "dev", dir: filepath.Join(deployDir, "overlays", "dev"), dev: true},
	{name: "sqlite+servicemonitor", dir: filepath.Join("testdata", "servicemonitor"), monitor: true},
}

func TestManifests(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			objs := render(t, v.dir)
			checks := []struct {
				name string
				fn   func(testing.TB, variant, []object)
			}{
				{"unique", checkUnique},
				{"containers", checkContainers},
				{"flags", checkFlags},
				{"references", checkReferences},
				{"services", checkServices},
				{"rbac", checkRBAC},
				{"server", checkServer},
				{"agent", checkAgent},
				{"webhook", checkWebhook},
				{"servicemonitor", checkServiceMonitor},
			}
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) { c.fn(t, v, objs) })
			}
		})
	}
}

// checkUnique: no two objects of one kind share a namespace and name.
func checkUnique(t testing.TB, _ variant, objs []object) {
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.String()] {
			t.Errorf("%s appears twice", o)
		}
		seen[o.String()] = true
	}
}

// container is a container with where it sits.
type container struct {
	w    workload
	c    *corev1.Container
	init bool
}

func (c container) String() string {
	kind := "container"
	if c.init {
		kind = "init container"
	}
	return fmt.Sprintf("%s %s: %s %q", c.w.kind, c.w.name, kind, c.c.Name)
}

func containers(objs []object) []container {
	var cs []container
	for _, w := range workloads(objs) {
		for i := range w.spec.InitContainers {
			cs = append(cs, container{w, &w.spec.InitContainers[i], true})
		}
		for i := range w.spec.Containers {
			cs = append(cs, container{w, &w.spec.Containers[i], false})
		}
	}
	return cs
}

// checkContainers: one image, resources, probes and a tight security
// context everywhere; the agent alone runs as root, with one capability per
// container.
func checkContainers(t testing.TB, v variant, objs []object) {
	wantImage, wantPull := image, corev1.PullPolicy("")
	if v.dev {
		wantImage, wantPull = devImage, corev1.PullIfNotPresent
	}
	cs := containers(objs)
	if len(cs) < 4 {
		t.Fatalf("found %d containers, want at least server, agent (and its init container) and webhook", len(cs))
	}
	for _, c := range cs {
		if c.c.Image != wantImage || c.c.ImagePullPolicy != wantPull {
			t.Errorf("%s: image %q pull policy %q, want %q %q", c, c.c.Image, c.c.ImagePullPolicy, wantImage, wantPull)
		}
		checkResources(t, c)
		checkProbes(t, c)
		checkSecurity(t, c)
	}
}

func checkResources(t testing.TB, c container) {
	r := c.c.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		q, ok := r.Requests[name]
		if !ok || q.IsZero() {
			t.Errorf("%s: no %s request", c, name)
		}
	}
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok || lim.IsZero() {
		t.Errorf("%s: no memory limit", c)
	} else if req := r.Requests[corev1.ResourceMemory]; lim.Cmp(req) < 0 {
		t.Errorf("%s: memory limit %s below its request %s", c, lim.String(), req.String())
	}
}

// checkProbes: every long-running container has a liveness and a
// readiness probe on one of its own ports; init containers have none.
func checkProbes(t testing.TB, c container) {
	if c.init {
		if c.c.LivenessProbe != nil || c.c.ReadinessProbe != nil || c.c.StartupProbe != nil {
			t.Errorf("%s: init containers take no probes", c)
		}
		return
	}
	for kind, p := range map[string]*corev1.Probe{"liveness": c.c.LivenessProbe, "readiness": c.c.ReadinessProbe} {
		if p == nil {
			t.Errorf("%s: no %s probe", c, kind)
			continue
		}
		if p.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an HTTP GET", c, kind)
			continue
		}
		if _, ok := containerPort(c.c, p.HTTPGet.Port); !ok {
			t.Errorf("%s: %s probe port %s is not a port of the container", c, kind, p.HTTPGet.Port.String())
		}
		if !strings.HasPrefix(p.HTTPGet.Path, "/") {
			t.Errorf("%s: %s probe path %q", c, kind, p.HTTPGet.Path)
		}
	}
}

// containerPort resolves a port number or name against c's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// agentCaps is the one capability each agent container adds; no other
// container adds any.
var agentCaps = map[string]corev1.Capability{"initialize": "NET_ADMIN", "agent": "NET_BIND_SERVICE"}

func checkSecurity(t testing.TB, c container) {
	sc := c.c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", c)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", c)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", c)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", c)
	}
	var add []corev1.Capability
	var drop []corev1.Capability
	if sc.Capabilities != nil {
		add, drop = sc.Capabilities.Add, sc.Capabilities.Drop
	}
	if !slices.Equal(drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: capabilities drop %v, want [ALL]", c, drop)
	}

	runAsNonRoot := c.w.spec.SecurityContext != nil && c.w.spec.SecurityContext.RunAsNonRoot != nil && *c.w.spec.SecurityContext.RunAsNonRoot
	if sc.RunAsNonRoot != nil {
		runAsNonRoot = *sc.RunAsNonRoot
	}
	uid := int64(-1)
	if c.w.spec.SecurityContext != nil && c.w.spec.SecurityContext.RunAsUser != nil {
		uid = *c.w.spec.SecurityContext.RunAsUser
	}
	if sc.RunAsUser != nil {
		uid = *sc.RunAsUser
	}

	if c.w.name == agentName {
		// The agent needs root: added capabilities only reach uid 0 (see
		// deploy/base/agent/daemonset.yaml), so it gets exactly one.
		want, ok := agentCaps[c.c.Name]
		if !ok {
			t.Errorf("%s: unexpected container in the agent", c)
		} else if !slices.Equal(add, []corev1.Capability{want}) {
			t.Errorf("%s: capabilities add %v, want [%s]", c, add, want)
		}
		if uid != 0 || runAsNonRoot {
			t.Errorf("%s: runs as uid %d (runAsNonRoot %v); the added capability needs uid 0", c, uid, runAsNonRoot)
		}
		return
	}
	if len(add) > 0 {
		t.Errorf("%s: adds capabilities %v", c, add)
	}
	if !runAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not true", c)
	}
	if uid == 0 {
		t.Errorf("%s: runs as uid 0", c)
	}
	if ps := c.w.spec.SecurityContext; ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", c)
	}
}

// commands are podid's commands the manifests may run.
var commands = []string{"server", "agent", "agent initialize", "webhook"}

// checkFlags: every container runs podid with a known command and only
// flags (and PODID_ variables) that command has, and every $(VAR) in its
// args is defined.
func checkFlags(t testing.TB, _ variant, objs []object) {
	for _, c := range containers(objs) {
		if !slices.Equal(c.c.Command, []string{"podid"}) {
			t.Errorf("%s: command %q, want [podid]", c, c.c.Command)
			continue
		}
		path, rest := subcommand(c.c.Args)
		cmd := strings.Join(path, " ")
		if !slices.Contains(commands, cmd) {
			t.Errorf("%s: runs %q, not one of podid's commands %q", c, cmd, commands)
			continue
		}
		known := flagsOf(t, path...)
		for _, f := range argFlags(rest) {
			if !known[f] {
				t.Errorf("%s: podid %s has no flag --%s", c, cmd, f)
			}
		}
		for _, a := range rest {
			if !strings.HasPrefix(a, "-") {
				t.Errorf("%s: positional argument %q after the flags; write --flag=value", c, a)
			}
		}

		defined := map[string]bool{}
		for _, e := range c.c.Env {
			defined[e.Name] = true
			if f, ok := envFlag(e.Name); ok && !known[f] {
				t.Errorf("%s: env %s sets --%s, which podid %s does not have", c, e.Name, f, cmd)
			}
		}
		for _, ef := range c.c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			cm := find[corev1.ConfigMap](t, objs, ef.ConfigMapRef.Name)
			for k := range cm.Data {
				defined[k] = true
				f, ok := envFlag(k)
				if !ok {
					t.Errorf("%s: ConfigMap %s key %s is not a PODID_ setting", c, cm.Name, k)
				} else if !known[f] {
					t.Errorf("%s: ConfigMap %s key %s sets --%s, which podid %s does not have", c, cm.Name, k, f, cmd)
				}
			}
		}
		for _, a := range c.c.Args {
			for _, m := range varRef.FindAllStringSubmatch(a, -1) {
				if !defined[m[1]] {
					t.Errorf("%s: argument %q uses $(%s), which the container does not define (Kubernetes would pass it literally)", c, a, m[1])
				}
			}
		}
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkReferences: volumes, mounts and env refer to objects that exist or
// to the Secrets deploy/README.md tells the user to create.
func checkReferences(t testing.TB, _ variant, objs []object) {
	readme, err := os.ReadFile(filepath.Join(deployDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	secret := func(where, name string) {
		t.Helper()
		if !slices.Contains(userSecrets, name) {
			t.Errorf("%s: Secret %q is not one the user creates (%v)", where, name, userSecrets)
		}
		documented := regexp.MustCompile(`kubectl[^\n]* create secret [a-z]+ ` + regexp.QuoteMeta(name) + `\b`)
		if !documented.Match(readme) {
			t.Errorf("%s: Secret %q has no \"kubectl create secret\" example in deploy/README.md", where, name)
		}
	}
	for _, w := range workloads(objs) {
		where := w.kind + " " + w.name
		vols := map[string]bool{}
		for _, vol := range w.spec.Volumes {
			vols[vol.Name] = true
			switch {
			case vol.Secret != nil:
				secret(where+" volume "+vol.Name, vol.Secret.SecretName)
			case vol.ConfigMap != nil:
				find[corev1.ConfigMap](t, objs, vol.ConfigMap.Name)
			case vol.PersistentVolumeClaim != nil:
				find[corev1.PersistentVolumeClaim](t, objs, vol.PersistentVolumeClaim.ClaimName)
			}
		}
		if w.spec.ServiceAccountName == "" {
			t.Errorf("%s: no serviceAccountName", where)
		} else {
			find[corev1.ServiceAccount](t, objs, w.spec.ServiceAccountName)
		}
		for _, c := range containers(objs) {
			if c.w.name != w.name {
				continue
			}
			for _, m := range c.c.VolumeMounts {
				if !vols[m.Name] {
					t.Errorf("%s: mounts volume %q, which the pod does not have", c, m.Name)
				}
			}
			for _, ef := range c.c.EnvFrom {
				if ef.SecretRef != nil {
					secret(c.String(), ef.SecretRef.Name)
				}
			}
			for _, e := range c.c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					secret(c.String()+" env "+e.Name, r.Name)
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					cm := find[corev1.ConfigMap](t, objs, r.Name)
					if _, ok := cm.Data[r.Key]; !ok {
						t.Errorf("%s: env %s refers to key %q, which ConfigMap %s lacks", c, e.Name, r.Key, cm.Name)
					}
				}
			}
		}
	}
}

// selected returns the workloads whose pod labels sel matches.
func selected(sel map[string]string, objs []object) []workload {
	var ws []workload
	for _, w := range workloads(objs) {
		if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(w.labels)) {
			ws = append(ws, w)
		}
	}
	return ws
}

// servicePorts resolves each port of svc to the container port it reaches
// in each selected workload.
func checkServices(t testing.TB, _ variant, objs []object) {
	for _, svc := range all[corev1.Service](objs) {
		ws := selected(svc.Spec.Selector, objs)
		if len(ws) != 1 {
			t.Errorf("Service %s selects %d workloads, want 1", svc.Name, len(ws))
			continue
		}
		for _, p := range svc.Spec.Ports {
			if _, ok := targetOf(ws[0], svc, p); !ok {
				t.Errorf("Service %s port %q: targetPort %s is no container port of %s", svc.Name, p.Name, p.TargetPort.String(), ws[0].name)
			}
		}
	}
	for _, w := range workloads(objs) {
		var sel *metav1.LabelSelector
		for _, d := range all[appsv1.Deployment](objs) {
			if d.Name == w.name && w.kind == "Deployment" {
				sel = d.Spec.Selector
			}
		}
		for _, d := range all[appsv1.DaemonSet](objs) {
			if d.Name == w.name && w.kind == "DaemonSet" {
				sel = d.Spec.Selector
			}
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(labels.Set(w.labels)) {
			t.Errorf("%s %s: selector %v does not match its pod labels %v (%v)", w.kind, w.name, sel, w.labels, err)
		}
	}
}

// targetOf returns the container port that Service port p reaches in w.
func targetOf(w workload, svc *corev1.Service, p corev1.ServicePort) (corev1.ContainerPort, bool) {
	tp := p.TargetPort
	if tp.Type == intstr.Int && tp.IntVal == 0 {
		tp = intstr.FromInt32(p.Port)
	}
	for i := range w.spec.Containers {
		if cp, ok := containerPort(&w.spec.Containers[i], tp); ok && cp.Protocol == p.Protocol {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// checkRBAC: bindings name roles and service accounts that exist.
func checkRBAC(t testing.TB, _ variant, objs []object) {
	check := func(binding string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) {
		switch ref.Kind {
		case "Role":
			find[rbacv1.Role](t, objs, ref.Name)
		case "ClusterRole":
			find[rbacv1.ClusterRole](t, objs, ref.Name)
		default:
			t.Errorf("%s: roleRef kind %q", binding, ref.Kind)
		}
		if len(subjects) == 0 {
			t.Errorf("%s: no subjects", binding)
		}
		for _, s := range subjects {
			if s.Kind != "ServiceAccount" || s.Namespace != namespace || !has[corev1.ServiceAccount](objs, s.Name) {
				t.Errorf("%s: subject %+v is not a ServiceAccount of %s", binding, s, namespace)
			}
		}
	}
	for _, b := range all[rbacv1.RoleBinding](objs) {
		check("RoleBinding "+b.Name, b.RoleRef, b.Subjects)
	}
	for _, b := range all[rbacv1.ClusterRoleBinding](objs) {
		check("ClusterRoleBinding "+b.Name, b.RoleRef, b.Subjects)
	}
}

// allowed reports whether the rules grant verb on resource (in apiGroup),
// for the object name ("" for any name, as create needs).
func allowed(rules []rbacv1.PolicyRule, apiGroup, resource, verb, name string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, apiGroup) && slices.Contains(r.Resources, resource) &&
			slices.Contains(r.Verbs, verb) && (len(r.ResourceNames) == 0 || (name != "" && slices.Contains(r.ResourceNames, name))) {
			return true
		}
	}
	return false
}

// boundRules returns the rules bound to service account sa by bindings of
// kind bindingKind ("RoleBinding" or "ClusterRoleBinding").
func boundRules(objs []object, sa, bindingKind string) []rbacv1.PolicyRule {
	var rules []rbacv1.PolicyRule
	add := func(ref rbacv1.RoleRef, subjects []rbacv1.Subject) {
		if !slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool { return s.Kind == "ServiceAccount" && s.Name == sa }) {
			return
		}
		for _, o := range objs {
			switch r := o.obj.(type) {
			case *rbacv1.Role:
				if ref.Kind == "Role" && r.Name == ref.Name {
					rules = append(rules, r.Rules...)
				}
			case *rbacv1.ClusterRole:
				if ref.Kind == "ClusterRole" && r.Name == ref.Name {
					rules = append(rules, r.Rules...)
				}
			}
		}
	}
	if bindingKind == "RoleBinding" {
		for _, b := range all[rbacv1.RoleBinding](objs) {
			add(b.RoleRef, b.Subjects)
		}
	} else {
		for _, b := range all[rbacv1.ClusterRoleBinding](objs) {
			add(b.RoleRef, b.Subjects)
		}
	}
	return rules
}

// mountedFrom reports whether path lies in a mount of c that comes from
// the Secret secretName (and, when items are listed, from key).
func mountedFrom(w workload, c *corev1.Container, path, secretName, key string) bool {
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
			continue
		}
		for _, vol := range w.spec.Volumes {
			if vol.Name != m.Name || vol.Secret == nil || vol.Secret.SecretName != secretName {
				continue
			}
			if len(vol.Secret.Items) == 0 {
				return rel == key
			}
			for _, it := range vol.Secret.Items {
				if it.Path == rel && it.Key == key {
					return true
				}
			}
		}
	}
	return false
}

// mainContainer returns the named workload and its first container.
func mainContainer(t testing.TB, objs []object, name string) (workload, *corev1.Container) {
	t.Helper()
	for _, w := range workloads(objs) {
		if w.name == name {
			return w, &w.spec.Containers[0]
		}
	}
	t.Fatalf("no workload %s", name)
	return workload{}, nil
}

// mustFlag returns the value of --name in c's args, failing when missing.
func mustFlag(t testing.TB, c *corev1.Container, name string) string {
	t.Helper()
	v, ok := flagValue(c.Args, name)
	if !ok {
		t.Errorf("container %s: no --%s", c.Name, name)
	}
	return v
}

// listenPort returns the port of a listen address like ":8443".
func listenPort(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("listen address %q: %v", addr, err)
		return 0
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Errorf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// checkServer: TLS on the API port, keys and certificates from their
// Secrets, and the store as the overlay says.
func checkServer(t testing.TB, v variant, objs []object) {
	d := find[appsv1.Deployment](t, objs, serverName)
	w, c := mainContainer(t, objs, serverName)
	if c.Args[0] != "server" {
		t.Fatalf("server args %q", c.Args)
	}
	port := listenPort(t, mustFlag(t, c, "listen"))
	cp, ok := containerPort(c, intstr.FromInt32(port))
	if !ok {
		t.Errorf("server listens on %d, which is not a container port", port)
	}
	for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			continue // checkProbes reports it
		}
		if got, _ := containerPort(c, p.HTTPGet.Port); got != cp || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Path != "/healthz" {
			t.Errorf("server %s probe %s %s:%s, want HTTPS /healthz on the API port %d", kind, p.HTTPGet.Scheme, p.HTTPGet.Path, p.HTTPGet.Port.String(), port)
		}
	}
	svc := find[corev1.Service](t, objs, serverName)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP && svc.Spec.Type != "" {
		t.Errorf("Service %s type %s, want ClusterIP", svc.Name, svc.Spec.Type)
	}
	for _, f := range []struct{ flag, secret, key string }{
		{"tls-cert", "podid-server-tls", "tls.crt"},
		{"tls-key", "podid-server-tls", "tls.key"},
		{"keys-file", "podid-server-keys", "keys.json"},
	} {
		if p := mustFlag(t, c, f.flag); !mountedFrom(w, c, p, f.secret, f.key) {
			t.Errorf("server --%s=%s is not key %s of Secret %s", f.flag, p, f.key, f.secret)
		}
	}
	if d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Error("server pod mounts a Kubernetes API token it never uses")
	}

	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	dataDir := mustFlag(t, c, "data-dir")
	var pvcMounted bool
	for _, m := range c.VolumeMounts {
		for _, vol := range w.spec.Volumes {
			if vol.Name == m.Name && vol.PersistentVolumeClaim != nil && m.MountPath == dataDir && !m.ReadOnly {
				pvcMounted = true
			}
		}
	}
	var store *corev1.EnvVar
	for i, e := range c.Env {
		if e.Name == "PODID_STORE" {
			store = &c.Env[i]
		}
	}
	if _, ok := flagValue(c.Args, "store"); ok {
		t.Error("server args set --store; the overlays set PODID_STORE (or leave SQLite in --data-dir)")
	}
	if v.postgres {
		if replicas < 2 {
			t.Errorf("postgres: server replicas %d, want at least 2", replicas)
		}
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Errorf("postgres: server strategy %s, want RollingUpdate", d.Spec.Strategy.Type)
		}
		if pvcMounted || len(all[corev1.PersistentVolumeClaim](objs)) > 0 {
			t.Error("postgres: the server still has a PersistentVolumeClaim")
		}
		if store == nil || store.ValueFrom == nil || store.ValueFrom.SecretKeyRef == nil ||
			store.ValueFrom.SecretKeyRef.Name != "podid-postgres" || store.ValueFrom.SecretKeyRef.Key != "url" {
			t.Errorf("postgres: PODID_STORE is %+v, want Secret podid-postgres key url", store)
		}
		return
	}
	if replicas != 1 {
		t.Errorf("sqlite: server replicas %d, want 1 (SQLite has one writer)", replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("sqlite: server strategy %s, want Recreate so two pods never share the volume", d.Spec.Strategy.Type)
	}
	if !pvcMounted {
		t.Errorf("sqlite: --data-dir %s is not a writable PersistentVolumeClaim mount", dataDir)
	}
	if store != nil {
		t.Error("sqlite: PODID_STORE is set")
	}
}

// agentPorts are the agent's flags and the container ports they must match.
var agentPorts = map[string]int32{"port": 80, "probe-port": 2703, "metrics-port": 2705}

// checkAgent: a hostNetwork DaemonSet on every node whose init container
// creates the link, serving on 80 with probes on 2703 and metrics on 2705,
// calling the server through its Service and allowed to untaint its node.
func checkAgent(t testing.TB, _ variant, objs []object) {
	ds := find[appsv1.DaemonSet](t, objs, agentName)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("agent hostNetwork %v dnsPolicy %s, want true ClusterFirstWithHostNet", spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("agent priorityClassName %q", spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("agent tolerations %+v do not tolerate every taint", spec.Tolerations)
	}
	if len(spec.InitContainers) != 1 || !slices.Equal(spec.InitContainers[0].Args, []string{"agent", "initialize"}) {
		t.Errorf("agent init containers %+v, want one running podid agent initialize", spec.InitContainers)
	}
	w, c := mainContainer(t, objs, agentName)

	for flag, want := range agentPorts {
		got := mustFlag(t, c, flag)
		if got != strconv.Itoa(int(want)) {
			t.Errorf("agent --%s=%s, want %d", flag, got, want)
		}
		cp, ok := containerPort(c, intstr.FromInt32(want))
		if !ok || cp.Protocol != corev1.ProtocolTCP || (cp.HostPort != 0 && cp.HostPort != want) {
			t.Errorf("agent container port %d: %+v", want, cp)
		}
	}
	for kind, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if kind == nil || kind.HTTPGet == nil {
			continue
		}
		if cp, _ := containerPort(c, kind.HTTPGet.Port); cp.ContainerPort != agentPorts["probe-port"] || kind.HTTPGet.Path != want {
			t.Errorf("agent probe %s on %s, want %s on %d", kind.HTTPGet.Path, kind.HTTPGet.Port.String(), want, agentPorts["probe-port"])
		}
	}

	var nodeName bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeName = true
		}
	}
	if !nodeName || mustFlag(t, c, "node-name") != "$(NODE_NAME)" {
		t.Error("agent --node-name is not $(NODE_NAME) from spec.nodeName")
	}
	if got := mustFlag(t, c, "remove-taint"); got != "podid.io/agent-not-ready:NoSchedule" {
		t.Errorf("agent --remove-taint=%s", got)
	}
	if p := mustFlag(t, c, "key-file"); !mountedFrom(w, c, p, "podid-agent-key", "key.json") {
		t.Errorf("agent --key-file=%s is not key key.json of Secret podid-agent-key", p)
	}
	if p, ok := flagValue(c.Args, "server-ca"); ok && !mountedFrom(w, c, p, "podid-server-tls", "ca.crt") {
		t.Errorf("agent --server-ca=%s is not key ca.crt of Secret podid-server-tls", p)
	}
	checkServerURL(t, objs, "agent --endpoint", mustFlag(t, c, "endpoint"))

	if spec.ServiceAccountName != agentName {
		t.Errorf("agent service account %q", spec.ServiceAccountName)
	}
	rules := boundRules(objs, spec.ServiceAccountName, "ClusterRoleBinding")
	for _, verb := range []string{"get", "patch"} {
		if !allowed(rules, "", "nodes", verb, "any-node") {
			t.Errorf("agent may not %s nodes", verb)
		}
	}
}

// checkServerURL: u is https://<server Service>.<namespace>.svc:<its port>.
func checkServerURL(t testing.TB, objs []object, what, u string) {
	t.Helper()
	svc := find[corev1.Service](t, objs, serverName)
	pu, err := url.Parse(u)
	if err != nil {
		t.Errorf("%s %q: %v", what, u, err)
		return
	}
	wantHost := svc.Name + "." + svc.Namespace + ".svc"
	port, _ := strconv.Atoi(pu.Port())
	if pu.Scheme != "https" || pu.Hostname() != wantHost || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port }) {
		t.Errorf("%s %q is not https://%s on a port of Service %s", what, u, wantHost, svc.Name)
	}
}

// checkWebhook: the configuration calls the webhook's Service on /mutate,
// never blocks pod creation, skips opted-out namespaces and pods, and the
// webhook may maintain its own TLS Secret and caBundle and nothing more.
func checkWebhook(t testing.TB, _ variant, objs []object) {
	mwc := find[admissionv1.MutatingWebhookConfiguration](t, objs, webhookConf)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%s has %d webhooks, want 1", webhookConf, len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionv1.Ignore {
		t.Errorf("failurePolicy %v, want Ignore", wh.FailurePolicy)
	}
	if wh.SideEffects == nil || *wh.SideEffects != admissionv1.SideEffectClassNone {
		t.Errorf("sideEffects %v, want None", wh.SideEffects)
	}
	if !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions %v", wh.AdmissionReviewVersions)
	}
	if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds != 3 {
		t.Errorf("timeoutSeconds %v, want 3", wh.TimeoutSeconds)
	}
	if wh.ReinvocationPolicy == nil || *wh.ReinvocationPolicy != admissionv1.NeverReinvocationPolicy {
		t.Errorf("reinvocationPolicy %v, want Never", wh.ReinvocationPolicy)
	}
	if len(wh.Name) == 0 || strings.Count(wh.Name, ".") < 2 {
		t.Errorf("webhook name %q is not fully qualified", wh.Name)
	}
	if len(wh.ClientConfig.CABundle) != 0 || wh.ClientConfig.URL != nil {
		t.Error("clientConfig sets caBundle or url; the webhook patches its own CA into a service reference")
	}
	if len(wh.Rules) != 1 || !slices.Equal(wh.Rules[0].Operations, []admissionv1.OperationType{admissionv1.Create}) ||
		!slices.Equal(wh.Rules[0].APIGroups, []string{""}) || !slices.Equal(wh.Rules[0].APIVersions, []string{"v1"}) ||
		!slices.Equal(wh.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("rules %+v, want CREATE of core v1 pods", wh.Rules)
	}
	checkSelectors(t, objs, wh)

	ref := wh.ClientConfig.Service
	if ref == nil {
		t.Fatal("clientConfig has no service")
	}
	if ref.Path == nil || *ref.Path != "/mutate" {
		t.Errorf("clientConfig path %v, want /mutate", ref.Path)
	}
	if ref.Namespace != namespace || ref.Name != webhookName {
		t.Errorf("clientConfig service %s/%s, want %s/%s", ref.Namespace, ref.Name, namespace, webhookName)
	}
	svc := find[corev1.Service](t, objs, ref.Name)
	svcPort := int32(443)
	if ref.Port != nil {
		svcPort = *ref.Port
	}
	w, c := mainContainer(t, objs, webhookName)
	if ws := selected(svc.Spec.Selector, objs); len(ws) != 1 || ws[0].name != webhookName {
		t.Errorf("Service %s does not select the webhook's pods", svc.Name)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == svcPort })
	if i < 0 {
		t.Fatalf("Service %s has no port %d", svc.Name, svcPort)
	}
	target, ok := targetOf(w, svc, svc.Spec.Ports[i])
	if listen := listenPort(t, mustFlag(t, c, "listen")); !ok || target.ContainerPort != listen {
		t.Errorf("Service %s port %d reaches container port %d, but the webhook listens on %d", svc.Name, svcPort, target.ContainerPort, listen)
	}

	d := find[appsv1.Deployment](t, objs, webhookName)
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("webhook replicas %v, want 2", d.Spec.Replicas)
	}
	if got := mustFlag(t, c, "webhook-config-name"); got != mwc.Name {
		t.Errorf("webhook --webhook-config-name=%s, want %s", got, mwc.Name)
	}
	if got := mustFlag(t, c, "service-name"); got != svc.Name {
		t.Errorf("webhook --service-name=%s, want %s", got, svc.Name)
	}
	secretName := mustFlag(t, c, "secret-name")
	if slices.Contains(userSecrets, secretName) {
		t.Errorf("webhook --secret-name=%s is a Secret the user creates", secretName)
	}
	if p := mustFlag(t, c, "key-file"); !mountedFrom(w, c, p, "podid-webhook-key", "key.json") {
		t.Errorf("webhook --key-file=%s is not key key.json of Secret podid-webhook-key", p)
	}
	if p, ok := flagValue(c.Args, "server-ca"); ok && !mountedFrom(w, c, p, "podid-server-tls", "ca.crt") {
		t.Errorf("webhook --server-ca=%s is not key ca.crt of Secret podid-server-tls", p)
	}
	checkServerURL(t, objs, "webhook --server", mustFlag(t, c, "server"))

	sa := w.spec.ServiceAccountName
	local := boundRules(objs, sa, "RoleBinding")
	for _, verb := range []string{"get", "update"} {
		if !allowed(local, "", "secrets", verb, secretName) {
			t.Errorf("webhook may not %s Secret %s", verb, secretName)
		}
		if allowed(local, "", "secrets", verb, "podid-server-keys") {
			t.Errorf("webhook may %s Secrets other than its own", verb)
		}
	}
	if !allowed(local, "", "secrets", "create", "") {
		t.Error("webhook may not create its Secret")
	}
	cluster := boundRules(objs, sa, "ClusterRoleBinding")
	for _, verb := range []string{"get", "update"} {
		if !allowed(cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", verb, mwc.Name) {
			t.Errorf("webhook may not %s MutatingWebhookConfiguration %s", verb, mwc.Name)
		}
		if allowed(cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", verb, "someone-elses") {
			t.Errorf("webhook may %s other MutatingWebhookConfigurations", verb)
		}
	}
	if allowed(cluster, "", "secrets", "get", "any") {
		t.Error("webhook may read Secrets cluster-wide")
	}
}

// checkSelectors: the namespace and object selectors skip what the webhook
// documentation promises to skip, and no more.
func checkSelectors(t testing.TB, objs []object, wh admissionv1.MutatingWebhook) {
	nsSel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
	if err != nil {
		t.Fatalf("namespaceSelector: %v", err)
	}
	objSel, err := metav1.LabelSelectorAsSelector(wh.ObjectSelector)
	if err != nil {
		t.Fatalf("objectSelector: %v", err)
	}
	nsName := func(name string, extra map[string]string) labels.Set {
		l := labels.Set{"kubernetes.io/metadata.name": name}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	for _, tc := range []struct {
		what string
		sel  labels.Selector
		set  labels.Set
		want bool
	}{
		{"namespace shop", nsSel, nsName("shop", nil), true},
		{"namespace shop with podid.io/inject=true", nsSel, nsName("shop", map[string]string{"podid.io/inject": "true"}), true},
		{"namespace shop with podid.io/inject=false", nsSel, nsName("shop", map[string]string{"podid.io/inject": "false"}), false},
		{"namespace kube-system", nsSel, nsName("kube-system", nil), false},
		{"pod without labels", objSel, labels.Set{}, true},
		{"pod with podid.io/inject=false", objSel, labels.Set{"podid.io/inject": "false"}, false},
		{"pod with app=web", objSel, labels.Set{"app": "web"}, true},
	} {
		if got := tc.sel.Matches(tc.set); got != tc.want {
			t.Errorf("%s: webhook called %v, want %v", tc.what, got, tc.want)
		}
	}
	ns := find[corev1.Namespace](t, objs, namespace)
	if nsSel.Matches(labels.Set(ns.Labels)) {
		t.Errorf("namespace %s (labels %v) is not excluded from injection", namespace, ns.Labels)
	}
}

// checkServiceMonitor: only the component brings the ServiceMonitor, and
// each of its endpoints reaches a metrics port podid serves.
func checkServiceMonitor(t testing.TB, v variant, objs []object) {
	sms := all[serviceMonitor](objs)
	if !v.monitor {
		if len(sms) > 0 {
			t.Error("a ServiceMonitor outside the servicemonitor component: the overlay fails on clusters without the CRD")
		}
		return
	}
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(sms))
	}
	sm := sms[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("ServiceMonitor selector %+v: %v", sm.Spec.Selector, err)
	}
	reached := map[string]bool{}
	for _, svc := range all[corev1.Service](objs) {
		if !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) && !sm.Spec.NamespaceSelector.Any {
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
			if i < 0 {
				t.Errorf("Service %s has no port %q for the ServiceMonitor", svc.Name, ep.Port)
				continue
			}
			for _, w := range selected(svc.Spec.Selector, objs) {
				cp, ok := targetOf(w, svc, svc.Spec.Ports[i])
				if !ok {
					continue
				}
				reached[w.name] = true
				c := &w.spec.Containers[0]
				port, ok := flagValue(c.Args, "metrics-port")
				if listen, lok := flagValue(c.Args, "metrics-listen"); lok {
					var err error
					_, port, err = net.SplitHostPort(listen)
					ok = err == nil
				}
				if !ok || port != strconv.Itoa(int(cp.ContainerPort)) {
					t.Errorf("ServiceMonitor scrapes %s on %d, but it serves metrics on %q", w.name, cp.ContainerPort, port)
				}
			}
		}
	}
	for _, name := range []string{serverName, agentName, webhookName} {
		if !reached[name] {
			t.Errorf("the ServiceMonitor does not scrape %s", name)
		}
	}
}
