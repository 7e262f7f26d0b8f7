package webhook_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/podid/podid/internal/webhook"
)

// fakeIndex is an Index with a fixed answer that records its lookups.
type fakeIndex struct {
	known bool
	has   map[string]bool // "namespace/serviceAccount"

	mu      sync.Mutex
	lookups []string
}

func (f *fakeIndex) HasAssociation(namespace, serviceAccount string) (bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := namespace + "/" + serviceAccount
	f.lookups = append(f.lookups, key)
	return f.known, f.known && f.has[key]
}

func warmIndex(keys ...string) *fakeIndex {
	f := &fakeIndex{known: true, has: map[string]bool{}}
	for _, k := range keys {
		f.has[k] = true
	}
	return f
}

const testUID = "705ab4f5-6393-11e8-b7cc-42010a800002"

// podReview builds an AdmissionReview as the API server sends it.
func podReview(t testing.TB, op admissionv1.Operation, namespace string, pod *corev1.Pod) *admissionv1.AdmissionReview {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       testUID,
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Operation: op,
			Namespace: namespace,
			Object:    runtime.RawExtension{Raw: raw},
			UserInfo:  authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller"},
		},
	}
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type harness struct {
	handler http.Handler
	reg     *prometheus.Registry
}

func newHarness(idx webhook.Index, mod ...func(*webhook.HandlerConfig)) *harness {
	reg := prometheus.NewRegistry()
	cfg := webhook.HandlerConfig{Mutation: webhook.DefaultConfig(), Index: idx, Metrics: webhook.NewMetrics(reg)}
	for _, m := range mod {
		m(&cfg)
	}
	return &harness{handler: webhook.NewHandler(cfg), reg: reg}
}

func (h *harness) post(t testing.TB, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	return rec
}

// admissions returns podid_webhook_admissions_total by result.
func (h *harness) admissions(t testing.TB) map[string]float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "podid_webhook_admissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}

func decodeResponse(t testing.TB, rec *httptest.ResponseRecorder) *admissionv1.AdmissionReview {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, rec.Body)
	}
	if out.Response == nil {
		t.Fatalf("no response in %s", rec.Body)
	}
	if out.Kind != "AdmissionReview" {
		t.Errorf("kind = %q", out.Kind)
	}
	if !out.Response.Allowed {
		t.Errorf("response denies the pod: %s", rec.Body)
	}
	return &out
}

func TestHandlerHappyPath(t *testing.T) {
	in, _ := readPod(t, "testdata/plain/in.yaml")
	want, _ := readPod(t, "testdata/plain/out.yaml")
	idx := warmIndex("shop/checkout")
	h := newHarness(idx)

	review := podReview(t, admissionv1.Create, "shop", in)
	rec := h.post(t, marshal(t, review))
	out := decodeResponse(t, rec)

	if out.APIVersion != "admission.k8s.io/v1" || out.Response.UID != testUID {
		t.Errorf("apiVersion %q uid %q, want the request's", out.APIVersion, out.Response.UID)
	}
	if out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType = %v, want JSONPatch", out.Response.PatchType)
	}
	if out.Response.Result != nil || len(out.Response.Warnings) != 0 {
		t.Errorf("unexpected message %+v / warnings %q", out.Response.Result, out.Response.Warnings)
	}
	// The patch applies to the object exactly as the API server holds it.
	got := applyPatchJSON(t, review.Request.Object.Raw, out.Response.Patch)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pod + patch differs from testdata/plain/out.yaml (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"mutated": 1}, h.admissions(t)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// TestHandlerPatchKeepsUnknownFields checks that fields this corev1 version
// does not know survive: the patch addresses array elements, it does not
// rewrite whole containers.
func TestHandlerPatchKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop"},
		"spec":{"futureField":{"x":1},"containers":[{"name":"app","image":"app:1","futureContainerField":true}]}}`)
	review := podReview(t, admissionv1.Create, "shop", &corev1.Pod{})
	review.Request.Object.Raw = raw
	out := decodeResponse(t, newHarness(warmIndex("shop/default")).post(t, marshal(t, review)))
	p, err := jsonpatch.DecodePatch(out.Response.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"futureField":{"x":1}`, `"futureContainerField":true`, `"AWS_CONTAINER_CREDENTIALS_FULL_URI"`} {
		if !bytes.Contains(patched, []byte(field)) {
			t.Errorf("patched pod lacks %s:\n%s", field, patched)
		}
	}
}

func TestHandlerDecisions(t *testing.T) {
	plain, _ := readPod(t, "testdata/plain/in.yaml")
	mutated, _ := readPod(t, "testdata/plain/out.yaml")
	foreign, _ := readPod(t, "testdata/existing-foreign-volume/in.yaml")

	optedOut := plain.DeepCopy()
	optedOut.Labels = map[string]string{"podid.io/inject": "false"}
	optedIn := plain.DeepCopy()
	optedIn.Labels = map[string]string{"podid.io/inject": "true"}
	fromController := plain.DeepCopy()
	fromController.Name, fromController.Namespace, fromController.GenerateName = "", "", "checkout-7d4b9c6f5-"
	noSA := plain.DeepCopy()
	noSA.Spec.ServiceAccountName = ""
	deprecatedSA := plain.DeepCopy()
	deprecatedSA.Spec.ServiceAccountName, deprecatedSA.Spec.DeprecatedServiceAccount = "", "legacy"

	tests := []struct {
		name       string
		index      webhook.Index
		mod        func(*webhook.HandlerConfig)
		op         admissionv1.Operation
		namespace  string
		pod        *corev1.Pod
		review     func(*admissionv1.AdmissionReview)
		wantPatch  bool
		wantMsg    string // substring of response.result.message; "" means none
		wantWarn   bool
		wantResult string
		wantLookup []string // nil: not checked
	}{
		{name: "association", index: warmIndex("shop/checkout"), pod: plain, wantPatch: true, wantResult: "mutated", wantLookup: []string{"shop/checkout"}},
		{name: "no association", index: warmIndex("shop/other"), pod: plain, wantResult: "skipped_no_association"},
		{name: "cold cache", index: &fakeIndex{}, pod: plain, wantMsg: "not loaded", wantWarn: true, wantResult: "skipped_cold_cache"},
		{name: "nil index is cold", index: nil, pod: plain, wantMsg: "not loaded", wantWarn: true, wantResult: "skipped_cold_cache"},
		{name: "opted out by label", index: warmIndex("shop/checkout"), pod: optedOut, wantResult: "skipped_opt_out", wantLookup: []string{}},
		{name: "inject label other than false", index: warmIndex("shop/checkout"), pod: optedIn, wantPatch: true, wantResult: "mutated"},
		{name: "already mutated", index: warmIndex("shop/checkout"), pod: mutated, wantResult: "unchanged"},
		{name: "foreign volume", index: warmIndex("shop/checkout"), pod: foreign, wantMsg: "not a pod identity token", wantWarn: true, wantResult: "skipped_conflict"},
		{name: "namespace from request", index: warmIndex("shop/checkout"), pod: fromController, wantPatch: true, wantResult: "mutated", wantLookup: []string{"shop/checkout"}},
		{name: "request namespace wins", index: warmIndex("prod/checkout"), namespace: "prod", pod: plain, wantPatch: true, wantResult: "mutated", wantLookup: []string{"prod/checkout"}},
		{name: "default service account", index: warmIndex("shop/default"), pod: noSA, wantPatch: true, wantResult: "mutated", wantLookup: []string{"shop/default"}},
		{name: "deprecated serviceAccount field", index: warmIndex("shop/legacy"), pod: deprecatedSA, wantPatch: true, wantResult: "mutated", wantLookup: []string{"shop/legacy"}},
		{name: "update passes through", index: warmIndex("shop/checkout"), op: admissionv1.Update, pod: plain, wantResult: "ignored", wantLookup: []string{}},
		{name: "delete passes through", index: warmIndex("shop/checkout"), op: admissionv1.Delete, pod: plain, wantResult: "ignored", wantLookup: []string{}},
		{name: "connect passes through", index: warmIndex("shop/checkout"), op: admissionv1.Connect, pod: plain, wantResult: "ignored"},
		{name: "invalid mutation config", index: warmIndex("shop/checkout"), mod: func(c *webhook.HandlerConfig) { c.Mutation.TokenJitter = 2 }, pod: plain, wantMsg: "jitter", wantResult: "error"},
		{name: "not a pod", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.Request.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
		}, wantMsg: "only mutates pods", wantResult: "ignored", wantLookup: []string{}},
		{name: "pod subresource", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.Request.SubResource = "ephemeralcontainers"
		}, wantMsg: "only mutates pods", wantResult: "ignored"},
		{name: "object missing", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.Request.Object.Raw = nil
		}, wantMsg: "no pod object", wantResult: "malformed"},
		{name: "object not a pod", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.Request.Object.Raw = []byte(`{"spec":{"containers":"app"}}`)
		}, wantMsg: "not a pod", wantResult: "malformed"},
		{name: "wrong review kind", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.Kind = "ConversionReview"
		}, wantMsg: "expected an admission.k8s.io/v1 AdmissionReview", wantResult: "malformed"},
		{name: "unknown review version", index: warmIndex("shop/checkout"), pod: plain, review: func(r *admissionv1.AdmissionReview) {
			r.APIVersion = "admission.k8s.io/v2"
		}, wantMsg: "expected an admission.k8s.io/v1 AdmissionReview", wantResult: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(tt.index, func(c *webhook.HandlerConfig) {
				if tt.mod != nil {
					tt.mod(c)
				}
			})
			op := tt.op
			if op == "" {
				op = admissionv1.Create
			}
			ns := tt.namespace
			if ns == "" {
				ns = "shop"
			}
			review := podReview(t, op, ns, tt.pod)
			if tt.review != nil {
				tt.review(review)
			}
			out := decodeResponse(t, h.post(t, marshal(t, review)))
			if out.Response.UID != testUID {
				t.Errorf("uid = %q, want %q", out.Response.UID, testUID)
			}
			if out.APIVersion != "admission.k8s.io/v1" {
				t.Errorf("apiVersion = %q", out.APIVersion)
			}
			if gotPatch := out.Response.Patch != nil; gotPatch != tt.wantPatch {
				t.Errorf("patch = %s, want a patch: %v", out.Response.Patch, tt.wantPatch)
			}
			if (out.Response.PatchType != nil) != tt.wantPatch {
				t.Errorf("patchType = %v with patch %v", out.Response.PatchType, tt.wantPatch)
			}
			if tt.wantPatch {
				// Whatever the path, the patch must yield what Mutate yields.
				pod := applyPatchJSON(t, review.Request.Object.Raw, out.Response.Patch)
				in := tt.pod.DeepCopy()
				if tt.namespace != "" || in.Namespace == "" {
					in.Namespace = ns
				}
				want, err := webhook.Mutate(in, webhook.DefaultConfig())
				if err != nil {
					t.Fatal(err)
				}
				want.Namespace = tt.pod.Namespace
				if diff := cmp.Diff(want, pod); diff != "" {
					t.Errorf("patched pod (-want +got):\n%s", diff)
				}
			}
			msg := ""
			if out.Response.Result != nil {
				msg = out.Response.Result.Message
			}
			if (tt.wantMsg == "") != (msg == "") || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want one containing %q", msg, tt.wantMsg)
			}
			if got := len(out.Response.Warnings) > 0; got != tt.wantWarn {
				t.Errorf("warnings = %q, want some: %v", out.Response.Warnings, tt.wantWarn)
			}
			for _, w := range out.Response.Warnings {
				if len(w) > 120 {
					t.Errorf("warning longer than the 120 characters kubectl shows: %q", w)
				}
			}
			if diff := cmp.Diff(map[string]float64{tt.wantResult: 1}, h.admissions(t)); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
			if fi, ok := tt.index.(*fakeIndex); ok && tt.wantLookup != nil {
				if diff := cmp.Diff(tt.wantLookup, fi.lookups, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("index lookups (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestHandlerV1beta1(t *testing.T) {
	plain, _ := readPod(t, "testdata/plain/in.yaml")
	review := podReview(t, admissionv1.Create, "shop", plain)
	review.APIVersion = "admission.k8s.io/v1beta1"
	out := decodeResponse(t, newHarness(warmIndex("shop/checkout")).post(t, marshal(t, review)))
	if out.APIVersion != "admission.k8s.io/v1beta1" || out.Response.UID != testUID || out.Response.Patch == nil {
		t.Errorf("v1beta1 review: apiVersion %q uid %q patch %s", out.APIVersion, out.Response.UID, out.Response.Patch)
	}
}

// TestHandlerUnreadable covers requests that carry no readable uid, and
// other HTTP-level failures: no AdmissionReview answer is possible there.
func TestHandlerUnreadable(t *testing.T) {
	plain, _ := readPod(t, "testdata/plain/in.yaml")
	valid := marshal(t, podReview(t, admissionv1.Create, "shop", plain))
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		max    int64
		status int
		result string // admissions counter label, "" when none
	}{
		{"empty body", "POST", "/mutate", nil, 0, 400, "malformed"},
		{"not JSON", "POST", "/mutate", []byte("<xml/>"), 0, 400, "malformed"},
		{"truncated JSON", "POST", "/mutate", valid[:len(valid)/2], 0, 400, "malformed"},
		{"JSON array", "POST", "/mutate", []byte("[]"), 0, 400, "malformed"},
		{"no request", "POST", "/mutate", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 0, 400, "malformed"},
		{"null request", "POST", "/mutate", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`), 0, 400, "malformed"},
		{"empty uid", "POST", "/mutate", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}`), 0, 400, "malformed"},
		{"uid of wrong type", "POST", "/mutate", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}`), 0, 400, "malformed"},
		{"body too large", "POST", "/mutate", valid, 100, 413, "malformed"},
		{"GET", "GET", "/mutate", nil, 0, 405, ""},
		{"other path", "POST", "/validate", valid, 0, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(warmIndex("shop/checkout"), func(c *webhook.HandlerConfig) { c.MaxBodyBytes = tt.max })
			req := httptest.NewRequest(tt.method, tt.path, bytes.NewReader(tt.body))
			rec := httptest.NewRecorder()
			h.handler.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			want := map[string]float64{}
			if tt.result != "" {
				want[tt.result] = 1
			}
			if diff := cmp.Diff(want, h.admissions(t)); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandlerMalformedWithUID: when the review has a readable uid but
// fields of the wrong type, the answer still allows, with a message.
func TestHandlerMalformedWithUID(t *testing.T) {
	bodies := map[string]string{
		"operation of wrong type": `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":5}}`,
		"object of wrong type":    `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"CREATE","kind":{"kind":"Pod","version":"v1"},"object":"pod"}}`,
		"kind of wrong type":      `{"apiVersion":"admission.k8s.io/v1","kind":["AdmissionReview"],"request":{"uid":"u-1"}}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			h := newHarness(warmIndex("shop/default"))
			rec := h.post(t, []byte(body))
			out := decodeResponse(t, rec)
			if out.Response.UID != "u-1" || out.Response.Patch != nil {
				t.Errorf("uid %q patch %s", out.Response.UID, out.Response.Patch)
			}
			if out.Response.Result == nil || !strings.Contains(out.Response.Result.Message, "malformed") && !strings.Contains(out.Response.Result.Message, "not a pod") {
				t.Errorf("result = %+v, want a message", out.Response.Result)
			}
			if diff := cmp.Diff(map[string]float64{"malformed": 1}, h.admissions(t)); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdmissionOverTLS is the API server's view: a real AdmissionReview,
// its object set as a typed Pod and marshalled by encoding/json, POSTed over
// HTTPS to a TLS server.
func TestAdmissionOverTLS(t *testing.T) {
	in, _ := readPod(t, "testdata/init-containers/in.yaml")
	want, _ := readPod(t, "testdata/init-containers/out.yaml")
	srv := httptest.NewTLSServer(newHarness(warmIndex("shop/checkout")).handler)
	defer srv.Close()

	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "b6c1a3e8-0f4e-4a8e-9a58-0d3c5a7f1e21",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Operation: admissionv1.Create,
			Namespace: "shop",
			Object:    runtime.RawExtension{Object: in},
			Options:   runtime.RawExtension{Object: &metav1.CreateOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "CreateOptions"}}},
		},
	}
	body, err := json.Marshal(&review)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Post(srv.URL+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v: %s", resp.StatusCode, err, respBody)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(respBody, &out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != review.Request.UID || !out.Response.Allowed || out.APIVersion != review.APIVersion {
		t.Fatalf("response %s does not answer the review", respBody)
	}
	var sent admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &sent); err != nil {
		t.Fatal(err)
	}
	got := applyPatchJSON(t, sent.Request.Object.Raw, out.Response.Patch)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pod + patch differs from testdata/init-containers/out.yaml (-want +got):\n%s", diff)
	}
}
