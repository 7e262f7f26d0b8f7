package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/identity"
)

// Names EKS Pod Identity uses; pods and SDKs depend on them, so they are not
// configurable.
const (
	// VolumeName is the projected token volume added to the pod.
	VolumeName = "eks-pod-identity-token"
	// TokenPath is the token file's name inside the volume.
	TokenPath = "eks-pod-identity-token"
	// EnvCredentialsFullURI tells the SDKs' container credential provider
	// where the node agent listens.
	EnvCredentialsFullURI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
	// EnvAuthorizationTokenFile is the file whose content the SDKs send as
	// the Authorization header; they re-read it on every fetch.
	EnvAuthorizationTokenFile = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
	// SkipContainersAnnotation lists (comma separated) the containers and
	// init containers to leave alone.
	SkipContainersAnnotation = "eks.amazonaws.com/skip-containers"
	// InjectLabel set to "false" on a pod opts it out of injection.
	InjectLabel = "podid.io/inject"
)

// Defaults of Config, matching what EKS injects.
const (
	DefaultAudience        = identity.Audience
	DefaultMountPath       = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
	DefaultCredentialsURI  = "http://169.254.170.23/v1/credentials"
	DefaultTokenExpiration = 24 * time.Hour
	DefaultTokenJitter     = 0.1
)

// minTokenExpiration is the API server's lower bound for expirationSeconds
// of a projected service-account token; a shorter one is rejected.
const minTokenExpiration = 10 * time.Minute

// ErrVolumeConflict means the pod already has a volume named VolumeName that
// is not a pod identity token (another audience, path or volume type).
// Mutate and Patch then leave the pod unchanged, as the EKS webhook does:
// injecting the variables would point the SDKs at a file that is not a pod
// identity token, and replacing the pod's own volume would break it.
var ErrVolumeConflict = errors.New("webhook: the pod already has a volume named " + VolumeName + " that is not a pod identity token")

// Config is what Mutate injects. The zero value of each string field and of
// TokenExpiration means its default; TokenJitter 0 means no jitter, so start
// from DefaultConfig.
type Config struct {
	// Audience of the projected token; podid server accepts only
	// pods.eks.amazonaws.com.
	Audience string
	// TokenExpiration is the projected token's requested lifetime, at least
	// 10 minutes after jitter. The kubelet rotates the file at 80% of it.
	TokenExpiration time.Duration
	// TokenJitter in [0, 1) shortens TokenExpiration by up to that fraction,
	// by an amount derived from a hash of the pod's namespace and name (or
	// generateName), so Mutate stays a pure function while pods of different
	// workloads do not all request the same lifetime.
	TokenJitter float64
	// MountPath is where containers see the token volume.
	MountPath string
	// CredentialsURI is the node agent's endpoint; IPv6 clusters use
	// http://[fd00:ec2::23]/v1/credentials.
	CredentialsURI string
}

// DefaultConfig returns the configuration that matches EKS, with a 10% jitter.
func DefaultConfig() Config {
	return Config{
		Audience:        DefaultAudience,
		TokenExpiration: DefaultTokenExpiration,
		TokenJitter:     DefaultTokenJitter,
		MountPath:       DefaultMountPath,
		CredentialsURI:  DefaultCredentialsURI,
	}
}

func (c Config) withDefaults() Config {
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.TokenExpiration == 0 {
		c.TokenExpiration = DefaultTokenExpiration
	}
	if c.MountPath == "" {
		c.MountPath = DefaultMountPath
	}
	if c.CredentialsURI == "" {
		c.CredentialsURI = DefaultCredentialsURI
	}
	return c
}

// Validate reports a configuration the API server would reject or that
// cannot work; the webhook command should call it at startup.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.TokenJitter < 0 || c.TokenJitter >= 1 {
		return fmt.Errorf("webhook: token jitter %v is not in [0, 1)", c.TokenJitter)
	}
	if shortest := time.Duration(float64(c.TokenExpiration) * (1 - c.TokenJitter)); shortest < minTokenExpiration {
		return fmt.Errorf("webhook: token expiration %s with jitter %v can go below the API server's minimum of %s", c.TokenExpiration, c.TokenJitter, minTokenExpiration)
	}
	if !path.IsAbs(c.MountPath) || path.Clean(c.MountPath) != c.MountPath {
		return fmt.Errorf("webhook: mount path %q is not a clean absolute path", c.MountPath)
	}
	if !strings.HasPrefix(c.CredentialsURI, "http://") && !strings.HasPrefix(c.CredentialsURI, "https://") {
		return fmt.Errorf("webhook: credentials URI %q is not an http(s) URL", c.CredentialsURI)
	}
	return nil
}

// tokenFile is the value of EnvAuthorizationTokenFile for the pod.
func (c Config) tokenFile(windows bool) string {
	p := c.MountPath + "/" + TokenPath
	if windows {
		// Like the EKS webhook: Windows containers get a drive path; the
		// mount path itself stays in Kubernetes' slash form.
		return "C:" + strings.ReplaceAll(p, "/", `\`)
	}
	return p
}

// expirationSeconds is the jittered token lifetime for pod.
func (c Config) expirationSeconds(pod *corev1.Pod) int64 {
	base := int64(c.TokenExpiration / time.Second)
	span := int64(float64(base) * c.TokenJitter)
	if span <= 0 {
		return base
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	h := fnv.New64a()
	h.Write([]byte(pod.Namespace + "/" + name))
	return base - int64(h.Sum64()%uint64(span+1))
}

// isWindows reports whether the pod will run on Windows nodes, by the same
// signals the EKS webhook uses plus the pod's spec.os field.
func isWindows(pod *corev1.Pod) bool {
	if pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows {
		return true
	}
	return pod.Spec.NodeSelector[corev1.LabelOSStable] == "windows" ||
		pod.Spec.NodeSelector["beta.kubernetes.io/os"] == "windows"
}

// skippedContainers parses SkipContainersAnnotation.
func skippedContainers(pod *corev1.Pod) map[string]bool {
	v, ok := pod.Annotations[SkipContainersAnnotation]
	if !ok {
		return nil
	}
	skip := map[string]bool{}
	for name := range strings.SplitSeq(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			skip[name] = true
		}
	}
	return skip
}

// isTokenVolume reports whether v is the pod identity token volume for cfg,
// whatever its expiration: that is what an earlier injection (possibly with
// another jitter or configuration) left behind.
func isTokenVolume(v *corev1.Volume, cfg Config) bool {
	p := v.Projected
	if p == nil || len(p.Sources) != 1 {
		return false
	}
	t := p.Sources[0].ServiceAccountToken
	return t != nil && t.Audience == cfg.Audience && t.Path == TokenPath
}

// Mutate returns a copy of pod with pod identity injected; pod itself is
// never modified. Each container and init container that is not named in
// SkipContainersAnnotation and sets neither EnvCredentialsFullURI nor
// EnvAuthorizationTokenFile gets both variables and a read-only mount of
// VolumeName at cfg.MountPath; a container that already mounts another
// volume at cfg.MountPath is left alone too, since a second mount there
// would make the pod invalid. The projected volume is added when some
// container mounts it and the pod does not have it yet. Mutating a mutated
// pod changes nothing.
//
// On ErrVolumeConflict the returned copy is unchanged. Other errors are an
// invalid cfg.
func Mutate(pod *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	return mutate(pod.DeepCopy(), cfg)
}

// mutate injects into out in place. It only appends to out's volumes and
// to its containers' env and volume mounts, which is what lets Patch run it
// on a shallow copy whose slices it owns.
func mutate(out *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return out, err
	}
	for i := range out.Spec.Volumes {
		v := &out.Spec.Volumes[i]
		if v.Name == VolumeName && !isTokenVolume(v, cfg) {
			return out, ErrVolumeConflict
		}
	}

	skip := skippedContainers(out)
	env := []corev1.EnvVar{
		{Name: EnvCredentialsFullURI, Value: cfg.CredentialsURI},
		{Name: EnvAuthorizationTokenFile, Value: cfg.tokenFile(isWindows(out))},
	}
	mount := corev1.VolumeMount{Name: VolumeName, ReadOnly: true, MountPath: cfg.MountPath}
	for _, cs := range [][]corev1.Container{out.Spec.InitContainers, out.Spec.Containers} {
		for i := range cs {
			if !skip[cs[i].Name] {
				injectContainer(&cs[i], env, mount)
			}
		}
	}

	if needsVolume(out) {
		exp := cfg.expirationSeconds(out)
		out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{
			Name: VolumeName,
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience:          cfg.Audience,
					ExpirationSeconds: &exp,
					Path:              TokenPath,
				}}},
			}},
		})
	}
	return out, nil
}

// injectContainer appends env and mount to c unless c already sets either
// variable (the pod chose its own credentials, or was injected before) or
// mounts another volume at the mount path.
func injectContainer(c *corev1.Container, env []corev1.EnvVar, mount corev1.VolumeMount) {
	for _, e := range c.Env {
		if e.Name == EnvCredentialsFullURI || e.Name == EnvAuthorizationTokenFile {
			return
		}
	}
	hasMount := false
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != mount.MountPath {
			continue
		}
		if m.Name != VolumeName {
			return
		}
		hasMount = true
	}
	c.Env = append(c.Env, env...)
	if !hasMount {
		c.VolumeMounts = append(c.VolumeMounts, mount)
	}
}

// needsVolume reports whether a container mounts VolumeName and the pod
// does not define it.
func needsVolume(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == VolumeName {
			return false
		}
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, m := range c.VolumeMounts {
				if m.Name == VolumeName {
					return true
				}
			}
		}
	}
	return false
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch returns the RFC 6902 JSON patch that turns pod into Mutate(pod,
// cfg), or nil when there is nothing to change (including on
// ErrVolumeConflict, which is returned too). The operations only append to
// arrays, addressed by index, so fields of the pod that the API server knows
// and this package's corev1 version does not are kept.
func Patch(pod *corev1.Pod, cfg Config) ([]byte, error) {
	// A deep copy of the whole pod would be most of the admission's cost;
	// mutate only appends, so it is enough to own the slices it appends to.
	// Clipping their capacity makes every append copy instead of writing
	// into the caller's backing arrays.
	shallow := *pod
	shallow.Spec.Volumes = slices.Clip(pod.Spec.Volumes)
	shallow.Spec.InitContainers = ownContainers(pod.Spec.InitContainers)
	shallow.Spec.Containers = ownContainers(pod.Spec.Containers)
	mutated, err := mutate(&shallow, cfg)
	if err != nil {
		return nil, err
	}
	var ops []patchOp
	ops = appendOps(ops, "/spec/volumes", pod.Spec.Volumes, mutated.Spec.Volumes)
	for _, kind := range []struct {
		path     string
		old, new []corev1.Container
	}{
		{"/spec/initContainers", pod.Spec.InitContainers, mutated.Spec.InitContainers},
		{"/spec/containers", pod.Spec.Containers, mutated.Spec.Containers},
	} {
		for i := range kind.old {
			base := fmt.Sprintf("%s/%d", kind.path, i)
			ops = appendOps(ops, base+"/env", kind.old[i].Env, kind.new[i].Env)
			ops = appendOps(ops, base+"/volumeMounts", kind.old[i].VolumeMounts, kind.new[i].VolumeMounts)
		}
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}

// ownContainers copies the container structs and clips the slices mutate
// appends to, so the caller's pod stays as it was.
func ownContainers(cs []corev1.Container) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := slices.Clone(cs)
	for i := range out {
		out[i].Env = slices.Clip(out[i].Env)
		out[i].VolumeMounts = slices.Clip(out[i].VolumeMounts)
	}
	return out
}

// appendOps adds the operations that grow the array at p from old to new,
// where Mutate only ever appends. An empty or absent array is set whole,
// because "/-" needs an existing array.
func appendOps[T any](ops []patchOp, p string, old, new []T) []patchOp {
	added := new[len(old):]
	if len(added) == 0 {
		return ops
	}
	if len(old) == 0 {
		return append(ops, patchOp{Op: "add", Path: p, Value: added})
	}
	for _, v := range added {
		ops = append(ops, patchOp{Op: "add", Path: p + "/-", Value: v})
	}
	return ops
}
