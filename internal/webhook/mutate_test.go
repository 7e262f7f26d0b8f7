package webhook_test

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/webhook"
)

var update = flag.Bool("update", false, "rewrite the golden out.yaml files from the current output")

// caseConfig changes the configuration for a golden case; the others use
// webhook.DefaultConfig.
var caseConfig = map[string]func(*webhook.Config){
	"custom-config": func(c *webhook.Config) {
		c.CredentialsURI = "http://[fd00:ec2::23]/v1/credentials"
		c.TokenExpiration = time.Hour
		c.TokenJitter = 0
		c.MountPath = "/var/run/podid"
	},
}

// caseErr is the error Mutate must return for a golden case.
var caseErr = map[string]error{
	"existing-foreign-volume": webhook.ErrVolumeConflict,
}

func configFor(name string) webhook.Config {
	cfg := webhook.DefaultConfig()
	if mod := caseConfig[name]; mod != nil {
		mod(&cfg)
	}
	return cfg
}

func readPod(t testing.TB, file string) (*corev1.Pod, []byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &pod, b
}

func toYAML(t testing.TB, pod *corev1.Pod) []byte {
	t.Helper()
	b, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyPatch applies a JSON patch to pod with an independent RFC 6902
// implementation and decodes the result.
func applyPatch(t testing.TB, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return applyPatchJSON(t, doc, patch)
}

func applyPatchJSON(t testing.TB, doc, patch []byte) *corev1.Pod {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decoding patch %s: %v", patch, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("applying patch %s: %v", patch, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(out, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

// TestGolden runs Mutate and Patch on testdata/<case>/in.yaml and compares
// with out.yaml; go test -run TestGolden -update rewrites out.yaml.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/in.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			cfg := configFor(name)
			pod, _ := readPod(t, in)
			pristine := pod.DeepCopy()

			got, err := webhook.Mutate(pod, cfg)
			if !errors.Is(err, caseErr[name]) || (err != nil && caseErr[name] == nil) {
				t.Fatalf("Mutate error = %v, want %v", err, caseErr[name])
			}
			if diff := cmp.Diff(pristine, pod); diff != "" {
				t.Fatalf("Mutate modified its input (-before +after):\n%s", diff)
			}

			outFile := filepath.Join(dir, "out.yaml")
			gotYAML := toYAML(t, got)
			if *update {
				if err := os.WriteFile(outFile, gotYAML, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, wantYAML := readPod(t, outFile)
			if diff := cmp.Diff(string(wantYAML), string(gotYAML)); diff != "" {
				t.Errorf("Mutate output differs from %s (-want +got):\n%s", outFile, diff)
			}

			patch, err := webhook.Patch(pod, cfg)
			if !errors.Is(err, caseErr[name]) || (err != nil && caseErr[name] == nil) {
				t.Fatalf("Patch error = %v, want %v", err, caseErr[name])
			}
			if diff := cmp.Diff(pristine, pod); diff != "" {
				t.Fatalf("Patch modified its input (-before +after):\n%s", diff)
			}
			patched := pod
			if patch != nil {
				patched = applyPatch(t, pod, patch)
			} else if !cmp.Equal(want, pod) {
				t.Fatal("Patch returned no patch, but out.yaml differs from in.yaml")
			}
			if diff := cmp.Diff(want, patched); diff != "" {
				t.Errorf("in.yaml + patch differs from out.yaml (-want +got):\n%s\npatch: %s", diff, patch)
			}

			// Idempotent: the mutated pod needs nothing more.
			again, err := webhook.Patch(want, cfg)
			if err != nil && caseErr[name] == nil {
				t.Fatalf("Patch(out.yaml) error = %v", err)
			}
			if again != nil {
				t.Errorf("Patch(out.yaml) = %s, want no patch", again)
			}
			remutated, _ := webhook.Mutate(want, cfg)
			if diff := cmp.Diff(want, remutated); diff != "" {
				t.Errorf("Mutate(out.yaml) changed it (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPatchOps pins the exact operations for the two shapes of array: set
// whole when absent, appended with "/-" when present, so a patch never
// replaces what the pod already has.
func TestPatchOps(t *testing.T) {
	pod, _ := readPod(t, "testdata/existing-env-and-volumes/in.yaml")
	patch, err := webhook.Patch(pod, webhook.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct{ Op, Path string }
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	want := []struct{ Op, Path string }{
		{"add", "/spec/volumes/-"},
		{"add", "/spec/containers/0/env/-"},
		{"add", "/spec/containers/0/env/-"},
		{"add", "/spec/containers/0/volumeMounts/-"},
	}
	if diff := cmp.Diff(want, ops); diff != "" {
		t.Errorf("ops (-want +got):\n%s", diff)
	}

	plain, _ := readPod(t, "testdata/plain/in.yaml")
	patch, err = webhook.Patch(plain, webhook.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ops = nil
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	want = []struct{ Op, Path string }{
		{"add", "/spec/volumes"},
		{"add", "/spec/containers/0/env"},
		{"add", "/spec/containers/0/volumeMounts"},
	}
	if diff := cmp.Diff(want, ops); diff != "" {
		t.Errorf("ops (-want +got):\n%s", diff)
	}
}

func TestTokenExpirationJitter(t *testing.T) {
	cfg := webhook.DefaultConfig()
	exp := func(ns, name, generateName string) int64 {
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name, pod.GenerateName = ns, name, generateName
		pod.Spec.Containers = []corev1.Container{{Name: "app"}}
		got, err := webhook.Mutate(pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return *got.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds
	}
	base := int64(cfg.TokenExpiration / time.Second)
	seen := map[int64]bool{}
	for i := range 50 {
		name := "pod-" + strings.Repeat("x", i)
		e := exp("shop", name, "")
		if e > base || e < base-base/10 {
			t.Fatalf("expiration %d for %s is outside [%d, %d]", e, name, base-base/10, base)
		}
		if again := exp("shop", name, ""); again != e {
			t.Fatalf("expiration for %s is not deterministic: %d then %d", name, e, again)
		}
		seen[e] = true
	}
	if len(seen) < 40 {
		t.Errorf("only %d distinct expirations over 50 pods; the jitter does not spread", len(seen))
	}
	// Controller-made pods have only a generateName at admission: the jitter
	// is then per workload, and still depends on the namespace.
	if a, b := exp("shop", "", "web-"), exp("shop", "", "web-"); a != b {
		t.Errorf("generateName jitter is not deterministic: %d then %d", a, b)
	}
	if exp("shop", "", "web-") == exp("other", "", "web-") {
		t.Error("generateName jitter ignores the namespace")
	}

	cfg.TokenJitter = 0
	if e := exp("shop", "x", ""); e != base {
		t.Errorf("without jitter expiration = %d, want %d", e, base)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*webhook.Config)
		ok   bool
	}{
		{"default", func(*webhook.Config) {}, true},
		{"zero value gets defaults", func(c *webhook.Config) { *c = webhook.Config{} }, true},
		{"negative jitter", func(c *webhook.Config) { c.TokenJitter = -0.1 }, false},
		{"jitter of one", func(c *webhook.Config) { c.TokenJitter = 1 }, false},
		{"expiration below API minimum", func(c *webhook.Config) { c.TokenExpiration = 5 * time.Minute }, false},
		{"jitter takes expiration below minimum", func(c *webhook.Config) { c.TokenExpiration = 11 * time.Minute; c.TokenJitter = 0.5 }, false},
		{"exactly the minimum", func(c *webhook.Config) { c.TokenExpiration = 10 * time.Minute; c.TokenJitter = 0 }, true},
		{"relative mount path", func(c *webhook.Config) { c.MountPath = "var/run" }, false},
		{"unclean mount path", func(c *webhook.Config) { c.MountPath = "/var/run/" }, false},
		{"URI not http", func(c *webhook.Config) { c.CredentialsURI = "169.254.170.23/v1/credentials" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := webhook.DefaultConfig()
			tt.mod(&cfg)
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
			got, merr := webhook.Mutate(pod, cfg)
			if (merr == nil) != tt.ok {
				t.Fatalf("Mutate error = %v, want ok=%v", merr, tt.ok)
			}
			if merr != nil && !cmp.Equal(got, pod) {
				t.Error("Mutate with an invalid config changed the pod")
			}
		})
	}
}

// TestWindowsSignals covers every way a pod says it runs on Windows.
func TestWindowsSignals(t *testing.T) {
	const winFile = `C:\var\run\secrets\pods.eks.amazonaws.com\serviceaccount\eks-pod-identity-token`
	const linuxFile = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
	tests := []struct {
		name string
		spec corev1.PodSpec
		want string
	}{
		{"node selector", corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/os": "windows"}}, winFile},
		{"beta node selector", corev1.PodSpec{NodeSelector: map[string]string{"beta.kubernetes.io/os": "windows"}}, winFile},
		{"pod os", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Windows}}, winFile},
		{"linux selector", corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/os": "linux"}}, linuxFile},
		{"nothing", corev1.PodSpec{}, linuxFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: tt.spec}
			pod.Spec.Containers = []corev1.Container{{Name: "app"}}
			got, err := webhook.Mutate(pod, webhook.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			env := got.Spec.Containers[0].Env
			if len(env) != 2 || env[1].Name != webhook.EnvAuthorizationTokenFile || env[1].Value != tt.want {
				t.Errorf("env = %+v, want token file %s", env, tt.want)
			}
			if m := got.Spec.Containers[0].VolumeMounts; len(m) != 1 || m[0].MountPath != webhook.DefaultMountPath {
				t.Errorf("mounts = %+v, want the default mount path", m)
			}
		})
	}
}

// TestPatchLeavesSpareCapacityAlone: Patch works on a shallow copy, so it
// must not append into the caller's backing arrays even when they have room.
func TestPatchLeavesSpareCapacityAlone(t *testing.T) {
	env := make([]corev1.EnvVar, 1, 8)
	env[0] = corev1.EnvVar{Name: "A", Value: "1"}
	mounts := make([]corev1.VolumeMount, 0, 8)
	vols := make([]corev1.Volume, 0, 8)
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes:    vols,
		Containers: []corev1.Container{{Name: "app", Env: env, VolumeMounts: mounts}},
	}}
	patch, err := webhook.Patch(pod, webhook.DefaultConfig())
	if err != nil || patch == nil {
		t.Fatalf("Patch = %s, %v", patch, err)
	}
	if spare := env[:cap(env)][1]; spare.Name != "" {
		t.Errorf("Patch wrote %q into the caller's env backing array", spare.Name)
	}
	if spare := mounts[:cap(mounts)][0]; spare.Name != "" {
		t.Errorf("Patch wrote %q into the caller's mounts backing array", spare.Name)
	}
	if spare := vols[:cap(vols)][0]; spare.Name != "" {
		t.Errorf("Patch wrote %q into the caller's volumes backing array", spare.Name)
	}
}
