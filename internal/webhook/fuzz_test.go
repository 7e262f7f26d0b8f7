package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// FuzzAdmissionHandler: whatever the body, the handler answers 200 with an
// allowing AdmissionReview that echoes the uid, or 400/413; and any patch
// applies cleanly to the object it was computed for.
func FuzzAdmissionHandler(f *testing.F) {
	ins, _ := filepath.Glob("testdata/*/in.yaml")
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		var pod corev1.Pod
		if err := yaml.Unmarshal(b, &pod); err != nil {
			f.Fatal(err)
		}
		f.Add(marshal(f, podReview(f, admissionv1.Create, "shop", &pod)))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","kind":{"version":"v1","kind":"Pod"},"object":{"spec":{"containers":[{"name":"a"}]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","kind":{"version":"v1","kind":"Pod"},"object":{"spec":{"volumes":[{"name":"eks-pod-identity-token"}],"containers":[{"name":"a","env":[{"name":"X"}]}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"u","operation":5}}`))
	f.Add([]byte(`{"request":{"uid":"u"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte{})

	h := newHarness(warmIndex("shop/checkout", "shop/default", "/default"))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.handler.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("response is not JSON: %v", err)
		}
		if out.Response == nil || !out.Response.Allowed || out.Response.UID == "" {
			t.Fatalf("response does not allow with a uid: %s", rec.Body)
		}
		if out.Response.Patch == nil {
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("a patch for an undecodable review: %v", err)
		}
		if out.Response.UID != in.Request.UID {
			t.Fatalf("uid %q, request uid %q", out.Response.UID, in.Request.UID)
		}
		p, err := jsonpatch.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("invalid patch %s: %v", out.Response.Patch, err)
		}
		if _, err := p.Apply(in.Request.Object.Raw); err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", out.Response.Patch, in.Request.Object.Raw, err)
		}
	})
}
