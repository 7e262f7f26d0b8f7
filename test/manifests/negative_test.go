package manifests

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// recorder is a testing.TB that collects failures instead of failing, so
// a check can be run against a broken manifest to see that it objects.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

// Fatalf records and stops the check's goroutine, as FailNow does.
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs) > 0
}

// run runs check in its own goroutine, so a Fatalf ends only that.
func (r *recorder) run(check func(testing.TB, variant, []object), v variant, objs []object) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(r, v, objs)
	}()
	<-done
}

// TestChecksCatchBreakage breaks one thing at a time in the rendered sqlite
// overlay and expects the check responsible for it to say so; a check that
// stays quiet here would pass anything.
func TestChecksCatchBreakage(t *testing.T) {
	sqlite := variants[0]
	objs := render(t, sqlite.dir)
	// Every check passes on the unbroken objects, or the cases below
	// prove nothing (TestManifests reports the details).
	for _, c := range []func(testing.TB, variant, []object){checkContainers, checkFlags, checkReferences, checkServer, checkAgent, checkWebhook} {
		r := &recorder{TB: t}
		r.run(c, sqlite, objs)
		if r.Failed() {
			t.Skipf("the unbroken manifests already fail: %v", r.errs)
		}
	}

	agent := func(objs []object) *corev1.PodSpec {
		return &find[appsv1.DaemonSet](t, objs, agentName).Spec.Template.Spec
	}
	server := func(objs []object) *corev1.Container {
		return &find[appsv1.Deployment](t, objs, serverName).Spec.Template.Spec.Containers[0]
	}
	hook := func(objs []object) *admissionv1.MutatingWebhook {
		return &find[admissionv1.MutatingWebhookConfiguration](t, objs, webhookConf).Webhooks[0]
	}
	for _, tc := range []struct {
		name    string
		check   func(testing.TB, variant, []object)
		breakIt func([]object)
		want    string
	}{
		{"agent off the host network", checkAgent, func(o []object) { agent(o).HostNetwork = false }, "hostNetwork"},
		{"init container without NET_ADMIN", checkContainers, func(o []object) {
			agent(o).InitContainers[0].SecurityContext.Capabilities.Add = nil
		}, "capabilities add [], want [NET_ADMIN]"},
		{"agent without its metrics port", checkAgent, func(o []object) {
			c := &agent(o).Containers[0]
			c.Ports = c.Ports[:2]
		}, "container port 2705"},
		{"agent probe on the wrong path", checkAgent, func(o []object) {
			agent(o).Containers[0].ReadinessProbe.HTTPGet.Path = "/healthz"
		}, "want /readyz"},
		{"unknown flag", checkFlags, func(o []object) {
			c := server(o)
			c.Args = append(c.Args, "--no-such-flag=1")
		}, "has no flag --no-such-flag"},
		{"undefined variable", checkFlags, func(o []object) {
			c := server(o)
			c.Args = append(c.Args, "--region=$(REGION)")
		}, "does not define"},
		{"misspelt PODID_ setting", checkFlags, func(o []object) {
			cm := find[corev1.ConfigMap](t, o, server(o).EnvFrom[0].ConfigMapRef.Name)
			cm.Data["PODID_REGON"] = "eu-west-1"
		}, "sets --regon"},
		{"no CPU request", checkContainers, func(o []object) {
			delete(server(o).Resources.Requests, corev1.ResourceCPU)
		}, "no cpu request"},
		{"memory limit below request", checkContainers, func(o []object) {
			server(o).Resources.Limits[corev1.ResourceMemory] = resource.MustParse("1Mi")
		}, "below its request"},
		{"server as root", checkContainers, func(o []object) {
			f := false
			server(o).SecurityContext.RunAsNonRoot = &f
		}, "runAsNonRoot is not true"},
		{"writable root filesystem", checkContainers, func(o []object) {
			f := false
			server(o).SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem"},
		{"no readiness probe", checkContainers, func(o []object) { server(o).ReadinessProbe = nil }, "no readiness probe"},
		{"undocumented Secret", checkReferences, func(o []object) {
			spec := &find[appsv1.Deployment](t, o, serverName).Spec.Template.Spec
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "podid-something"}}})
		}, "not one the user creates"},
		{"keys file off its Secret", checkServer, func(o []object) {
			c := server(o)
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--keys-file=") {
					c.Args[i] = "--keys-file=/var/lib/podid/keys.json"
				}
			}
		}, "is not key keys.json"},
		{"two SQLite replicas", checkServer, func(o []object) {
			n := int32(2)
			find[appsv1.Deployment](t, o, serverName).Spec.Replicas = &n
		}, "want 1"},
		{"webhook that fails closed", checkWebhook, func(o []object) {
			p := admissionv1.Fail
			hook(o).FailurePolicy = &p
		}, "want Ignore"},
		{"webhook on another path", checkWebhook, func(o []object) {
			p := "/mutate-pods"
			hook(o).ClientConfig.Service.Path = &p
		}, "want /mutate"},
		{"webhook calling another Service", checkWebhook, func(o []object) {
			hook(o).ClientConfig.Service.Name = serverName
		}, "clientConfig service"},
		{"webhook patching another configuration", checkWebhook, func(o []object) {
			c := &find[appsv1.Deployment](t, o, webhookName).Spec.Template.Spec.Containers[0]
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--webhook-config-name=") {
					c.Args[i] = "--webhook-config-name=podid-webhook"
				}
			}
		}, "--webhook-config-name=podid-webhook, want"},
		{"agent calling the server by another name", checkAgent, func(o []object) {
			c := &agent(o).Containers[0]
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--endpoint=") {
					c.Args[i] = "--endpoint=https://podid.podid-system.svc:8443"
				}
			}
		}, "is not https://podid-server.podid-system.svc"},
		{"kube-system injected", checkWebhook, func(o []object) {
			hook(o).NamespaceSelector.MatchExpressions = hook(o).NamespaceSelector.MatchExpressions[:1]
		}, "namespace kube-system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, sqlite.dir)
			tc.breakIt(objs)
			r := &recorder{TB: t}
			r.run(tc.check, sqlite, objs)
			if !slicesContainsSubstring(r.errs, tc.want) {
				t.Errorf("the check did not object with %q; it said %q", tc.want, r.errs)
			}
		})
	}
}

func slicesContainsSubstring(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"unknown field", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"podid-system"},"spec":{"prots":[]}}`, `unknown field "spec.prots"`},
		{"wrong case", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"podid-system"},"spec":{"Ports":[]}}`, `unknown field "spec.Ports"`},
		{"duplicate field", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"podid-system"},"spec":{"type":"ClusterIP","type":"NodePort"}}`, `duplicate field "spec.type"`},
		{"wrong type", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a","namespace":"podid-system"},"spec":{"replicas":"2"}}`, "cannot unmarshal"},
		{"unknown kind", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"podid-system"}}`, "kind not expected"},
		{"unknown field in a ServiceMonitor", `{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"a","namespace":"podid-system"},"spec":{"endpoint":[]}}`, `unknown field "spec.endpoint"`},
		{"namespaced without namespace", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`, `namespace "", want "podid-system"`},
		{"cluster-scoped with namespace", `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"a","namespace":"x"}}`, "cluster-scoped"},
		{"no name", `{"apiVersion":"v1","kind":"Namespace","metadata":{}}`, "no metadata.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := decode([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"podid-system"},"spec":{"ports":[{"port":1}]}}`)); err != nil {
		t.Errorf("decode of a valid Service: %v", err)
	}
}
