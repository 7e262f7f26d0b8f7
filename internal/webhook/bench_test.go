package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// BenchmarkAdmission is one admission of a pod that gets mutated, with a
// warm index: decode, decide, patch, encode.
func BenchmarkAdmission(b *testing.B) {
	pod, _ := readPod(b, "testdata/init-containers/in.yaml")
	body := marshal(b, podReview(b, admissionv1.Create, "shop", pod))
	h := newHarness(warmIndex("shop/checkout")).handler
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patch"`)) {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkDecodeEncode is the floor BenchmarkAdmission is measured
// against: the same request through the same HTTP plumbing, only decoding
// the AdmissionReview and encoding it back.
func BenchmarkDecodeEncode(b *testing.B) { benchFloor(b, false) }

// BenchmarkDecodeEncodePod is the same floor with the embedded pod decoded
// too, as any webhook that looks at the pod must: the review's object
// arrives as raw JSON inside the review.
func BenchmarkDecodeEncodePod(b *testing.B) { benchFloor(b, true) }

func benchFloor(b *testing.B, decodePod bool) {
	pod, _ := readPod(b, "testdata/init-containers/in.yaml")
	body := marshal(b, podReview(b, admissionv1.Create, "shop", pod))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if decodePod {
			var p corev1.Pod
			if err := json.Unmarshal(review.Request.Object.Raw, &p); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		out, err := json.Marshal(&review)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(out)
	})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
