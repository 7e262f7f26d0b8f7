package webhook

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8sjson "sigs.k8s.io/json"
)

// AdmissionReview API versions the handler answers. v1beta1 has the same
// JSON shape for everything the handler reads and writes.
const (
	reviewV1      = "admission.k8s.io/v1"
	reviewV1beta1 = "admission.k8s.io/v1beta1"
)

// DefaultMaxBodyBytes bounds a review's body: an UPDATE carries two objects
// of up to etcd's 1.5 MiB each, plus the review's own fields.
const DefaultMaxBodyBytes = 6 << 20

// HandlerConfig configures NewHandler.
type HandlerConfig struct {
	// Mutation is what gets injected; validate it with Config.Validate at
	// startup, since an invalid one makes every admission pass unmutated.
	Mutation Config
	// Index decides which pods get injected. Nil acts as a cold index.
	Index Index
	// MaxBodyBytes bounds the request body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

type handler struct {
	cfg HandlerConfig
}

// NewHandler returns the webhook's HTTP handler, serving POST /mutate with
// admission.k8s.io/v1 (or v1beta1) AdmissionReviews.
//
// It never denies a pod: every review whose uid can be read gets an allowed
// response, with a JSON patch only for a pod CREATE whose service account
// has an association, and a message when the review was malformed. When not
// even the uid can be read (invalid JSON, no request, empty uid) there is no
// response the API server would accept, so the answer is HTTP 400 (413 for
// an oversized body) and the webhook configuration's failurePolicy decides.
func NewHandler(cfg HandlerConfig) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /mutate", &handler{cfg: cfg})
	return mux
}

// outcome is the decision for one review, before encoding.
type outcome struct {
	result  string
	patch   []byte
	message string // for the API server's logs and audit
	warning string // shown to the user who created the pod
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		h.reject(w, r, status, "reading the admission review: "+err.Error(), start)
		return
	}

	var review admissionv1.AdmissionReview
	decodeErr := json.Unmarshal(body, &review)
	if decodeErr != nil {
		// A field of the wrong type fails the whole decode; the uid may
		// still be readable, and with it an answer the API server accepts.
		review = admissionv1.AdmissionReview{}
		var bare struct {
			APIVersion any `json:"apiVersion"` // any: they may be the broken fields
			Kind       any `json:"kind"`
			Request    *struct {
				UID types.UID `json:"uid"`
			} `json:"request"`
		}
		if json.Unmarshal(body, &bare) != nil || bare.Request == nil {
			h.reject(w, r, http.StatusBadRequest, "the body is not an AdmissionReview: "+decodeErr.Error(), start)
			return
		}
		review.APIVersion, _ = bare.APIVersion.(string)
		review.Kind, _ = bare.Kind.(string)
		review.Request = &admissionv1.AdmissionRequest{UID: bare.Request.UID}
	}
	if review.Request == nil || review.Request.UID == "" {
		h.reject(w, r, http.StatusBadRequest, "the AdmissionReview has no request uid", start)
		return
	}

	var o outcome
	switch {
	case decodeErr != nil:
		o = outcome{result: ResultMalformed, message: "podid webhook: malformed AdmissionReview: " + decodeErr.Error()}
	case review.Kind != "AdmissionReview" || (review.APIVersion != reviewV1 && review.APIVersion != reviewV1beta1):
		o = outcome{result: ResultMalformed, message: "podid webhook: expected an admission.k8s.io/v1 AdmissionReview, got " + review.APIVersion + " " + review.Kind}
	default:
		o = h.admit(r, review.Request)
	}
	h.respond(w, r, &review, o, start)
}

// admit decides for a well-formed review.
func (h *handler) admit(r *http.Request, req *admissionv1.AdmissionRequest) outcome {
	if req.Operation != admissionv1.Create {
		return outcome{result: ResultIgnored}
	}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" {
		// The webhook configuration's rules should only send pods.
		return outcome{result: ResultIgnored, message: "podid webhook only mutates pods, not " + req.Kind.String() + " " + req.SubResource}
	}
	if len(req.Object.Raw) == 0 {
		return outcome{result: ResultMalformed, message: "podid webhook: the request has no pod object"}
	}
	var pod corev1.Pod
	// Case-sensitive, as the API server decodes: encoding/json would read
	// "Spec" as spec, and the patch would then address paths the object
	// does not have.
	if err := k8sjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return outcome{result: ResultMalformed, message: "podid webhook: the object is not a pod: " + err.Error()}
	}
	// Pods created by controllers arrive without a namespace (and often
	// without a name); the request always has the namespace.
	if req.Namespace != "" {
		pod.Namespace = req.Namespace
	}
	sa := serviceAccountOf(&pod)
	log := h.cfg.Logger.With(slog.String("namespace", pod.Namespace), slog.String("pod", podName(&pod)),
		slog.String("serviceAccount", sa), slog.String("uid", string(req.UID)))

	if pod.Labels[InjectLabel] == "false" {
		log.LogAttrs(r.Context(), slog.LevelDebug, "pod opted out of pod identity injection")
		return outcome{result: ResultSkippedOptOut}
	}
	known, has := false, false
	if h.cfg.Index != nil {
		known, has = h.cfg.Index.HasAssociation(pod.Namespace, sa)
	}
	switch {
	case !known:
		log.LogAttrs(r.Context(), slog.LevelWarn, "association index not loaded yet; admitting pod without pod identity")
		return outcome{result: ResultSkippedColdCache,
			message: "podid webhook: association index not loaded yet; pod identity not injected",
			warning: "podid: association index not ready; pod identity credentials were not injected, recreate the pod later"}
	case !has:
		log.LogAttrs(r.Context(), slog.LevelDebug, "service account has no pod identity association")
		return outcome{result: ResultSkippedNoAssociation}
	}

	patch, err := Patch(&pod, h.cfg.Mutation)
	switch {
	case errors.Is(err, ErrVolumeConflict):
		log.LogAttrs(r.Context(), slog.LevelWarn, "pod has a foreign volume named "+VolumeName+"; not injecting")
		return outcome{result: ResultSkippedConflict, message: "podid webhook: " + err.Error(),
			warning: "podid: volume " + VolumeName + " is not a pod identity token; pod identity not injected"}
	case err != nil:
		log.LogAttrs(r.Context(), slog.LevelError, "cannot mutate pod", slog.String("error", err.Error()))
		return outcome{result: ResultError, message: "podid webhook: " + err.Error()}
	case patch == nil:
		log.LogAttrs(r.Context(), slog.LevelDebug, "pod identity already injected")
		return outcome{result: ResultUnchanged}
	}
	log.LogAttrs(r.Context(), slog.LevelInfo, "injecting pod identity")
	return outcome{result: ResultMutated, patch: patch}
}

// respond writes an allowed AdmissionReview response for review.
func (h *handler) respond(w http.ResponseWriter, r *http.Request, review *admissionv1.AdmissionReview, o outcome, start time.Time) {
	apiVersion := review.APIVersion
	if apiVersion != reviewV1beta1 {
		apiVersion = reviewV1
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if o.patch != nil {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = o.patch, &pt
	}
	if o.message != "" {
		resp.Result = &metav1.Status{Message: o.message}
	}
	if o.warning != "" {
		resp.Warnings = []string{o.warning}
	}
	if o.result == ResultMalformed {
		h.cfg.Logger.LogAttrs(r.Context(), slog.LevelWarn, "malformed admission review; allowing",
			slog.String("uid", string(review.Request.UID)), slog.String("message", o.message))
	}
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		// Only a bug could get here: every field is a plain value.
		h.reject(w, r, http.StatusInternalServerError, "encoding the response: "+err.Error(), start)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
	h.cfg.Metrics.admission(o.result, time.Since(start))
}

// reject answers with a plain HTTP error when no AdmissionReview response is
// possible.
func (h *handler) reject(w http.ResponseWriter, r *http.Request, status int, msg string, start time.Time) {
	h.cfg.Logger.LogAttrs(r.Context(), slog.LevelWarn, "rejecting admission request",
		slog.Int("status", status), slog.String("error", msg))
	http.Error(w, msg, status)
	h.cfg.Metrics.admission(ResultMalformed, time.Since(start))
}

// serviceAccountOf is the pod's service account as the API server's
// ServiceAccount admission plugin resolves it.
func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	if pod.Spec.DeprecatedServiceAccount != "" {
		return pod.Spec.DeprecatedServiceAccount
	}
	return "default"
}

// podName names the pod for logs; controller-made pods only have a
// generateName at admission.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName
}
