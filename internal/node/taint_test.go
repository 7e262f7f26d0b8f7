package node

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	testNode  = "ip-10-0-1-23.eu-west-1.compute.internal"
	testToken = "eyJhbGciOiJSUzI1NiJ9.test-token"
	agentTnt  = "podid.io/agent-not-ready:NoSchedule"
)

// fakeAPI emulates the two node endpoints of kube-apiserver that
// RemoveTaint uses, on the untyped JSON of a real Node so that unknown
// fields survive, applying JSON patches the way the API server does.
type fakeAPI struct {
	t     *testing.T
	token string

	mu          sync.Mutex
	node        map[string]any
	gets        int
	patches     int
	getStatus   []int                     // forced answers to successive GETs; 0 serves normally
	patchStatus []int                     // same for PATCHes
	beforePatch func(node map[string]any) // a concurrent writer, run once
}

func newFakeAPI(t *testing.T) *fakeAPI {
	b, err := os.ReadFile(filepath.Join("testdata", "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{t: t, token: testToken}
	if err := json.Unmarshal(b, &f.node); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/api/v1/nodes/")
	if !ok {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	var forced *[]int
	switch r.Method {
	case http.MethodGet:
		f.gets++
		forced = &f.getStatus
	case http.MethodPatch:
		f.patches++
		forced = &f.patchStatus
	default:
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method)
		return
	}
	if len(*forced) > 0 {
		code := (*forced)[0]
		*forced = (*forced)[1:]
		if code != 0 {
			verb := strings.ToLower(r.Method)
			writeStatus(w, code, http.StatusText(code), fmt.Sprintf(`nodes %q is forbidden or conflicted (%d): User "system:serviceaccount:kube-system:podid-agent" cannot %s resource "nodes"`, name, code, verb))
			return
		}
	}
	if name != f.node["metadata"].(map[string]any)["name"] {
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("nodes %q not found", name))
		return
	}
	if r.Method == http.MethodPatch {
		if ct := r.Header.Get("Content-Type"); ct != "application/json-patch+json" {
			writeStatus(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", ct)
			return
		}
		if f.beforePatch != nil {
			f.beforePatch(f.node)
			f.beforePatch = nil
		}
		if msg := f.applyPatch(r); msg != "" {
			writeStatus(w, http.StatusUnprocessableEntity, "Invalid", msg)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(f.node)
}

// applyPatch supports the test and remove ops RemoveTaint may send and
// reports anything else as the client's bug.
func (f *fakeAPI) applyPatch(r *http.Request) string {
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ops); err != nil {
		f.t.Errorf("undecodable patch: %v", err)
		return err.Error()
	}
	meta := f.node["metadata"].(map[string]any)
	spec := f.node["spec"].(map[string]any)
	taints, _ := spec["taints"].([]any)
	for _, op := range ops {
		switch {
		case op.Op == "test" && op.Path == "/metadata/resourceVersion":
			var v string
			if err := json.Unmarshal(op.Value, &v); err != nil || v != meta["resourceVersion"] {
				return "testing value /metadata/resourceVersion failed: test failed"
			}
		case op.Op == "remove" && strings.HasPrefix(op.Path, "/spec/taints/"):
			i, err := strconv.Atoi(strings.TrimPrefix(op.Path, "/spec/taints/"))
			if err != nil || i < 0 || i >= len(taints) {
				return "remove operation does not apply: doc is missing path: " + op.Path
			}
			taints = append(taints[:i:i], taints[i+1:]...)
		default:
			f.t.Errorf("unexpected patch op %+v", op)
			return "unsupported op"
		}
	}
	spec["taints"] = taints
	bumpVersion(f.node)
	return ""
}

func bumpVersion(node map[string]any) {
	meta := node["metadata"].(map[string]any)
	rv, _ := strconv.Atoi(meta["resourceVersion"].(string))
	meta["resourceVersion"] = strconv.Itoa(rv + 1)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}

func (f *fakeAPI) taints() []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.node["spec"].(map[string]any)["taints"].([]any)
}

func mustJSON(t *testing.T, s string) []any {
	t.Helper()
	var v []any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func writeToken(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRemoveTaint(t *testing.T) {
	const (
		dedicated = `{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}`
		agent     = `{"key": "podid.io/agent-not-ready", "effect": "NoSchedule"}`
		notReady  = `{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "2025-01-14T09:21:08Z"}`
		untouched = "[" + dedicated + "," + agent + "," + notReady + "]"
	)
	tests := []struct {
		name        string
		taint       string
		node        string
		setup       func(f *fakeAPI)
		wantErr     []string // substrings; nil means success
		wantTaints  string
		wantGets    int
		wantPatches int
	}{
		{name: "removes the taint", taint: agentTnt, wantTaints: "[" + dedicated + "," + notReady + "]", wantGets: 1, wantPatches: 1},
		{name: "key and effect match any value", taint: "dedicated:NoSchedule", wantTaints: "[" + agent + "," + notReady + "]", wantGets: 1, wantPatches: 1},
		{name: "given value must match", taint: "dedicated=other:NoSchedule", wantTaints: untouched, wantGets: 1},
		{name: "effect must match", taint: "podid.io/agent-not-ready:NoExecute", wantTaints: untouched, wantGets: 1},
		{name: "absent taint is success", taint: "example.com/other:NoSchedule", wantTaints: untouched, wantGets: 1},
		{
			// Without the resourceVersion test, index 1 would now remove
			// "dedicated" instead of the agent taint.
			name: "node changed between get and patch", taint: agentTnt,
			setup: func(f *fakeAPI) {
				f.beforePatch = func(node map[string]any) {
					spec := node["spec"].(map[string]any)
					spec["taints"] = append([]any{map[string]any{"key": "example.com/new", "effect": "NoSchedule"}}, spec["taints"].([]any)...)
					bumpVersion(node)
				}
			},
			wantTaints: `[{"key": "example.com/new", "effect": "NoSchedule"},` + dedicated + "," + notReady + "]",
			wantGets:   2, wantPatches: 2,
		},
		{
			name: "409 conflict is retried", taint: agentTnt,
			setup:      func(f *fakeAPI) { f.patchStatus = []int{409, 409} },
			wantTaints: "[" + dedicated + "," + notReady + "]", wantGets: 3, wantPatches: 3,
		},
		{
			name: "conflict forever gives up", taint: agentTnt,
			setup:      func(f *fakeAPI) { f.patchStatus = []int{409, 409, 409, 409, 409, 409} },
			wantErr:    []string{testNode, "409 Conflict", "gave up after 5 attempts"},
			wantTaints: untouched, wantGets: 5, wantPatches: 5,
		},
		{
			name: "get forbidden", taint: agentTnt,
			setup:      func(f *fakeAPI) { f.getStatus = []int{403} },
			wantErr:    []string{`getting node "` + testNode + `"`, "403 Forbidden", "cannot get", `"get" and "patch" on "nodes"`},
			wantTaints: untouched, wantGets: 1,
		},
		{
			name: "patch forbidden", taint: agentTnt,
			setup:      func(f *fakeAPI) { f.patchStatus = []int{403} },
			wantErr:    []string{"removing taint " + agentTnt + ` from node "` + testNode + `"`, "403 Forbidden", "cannot patch", "RBAC"},
			wantTaints: untouched, wantGets: 1, wantPatches: 1,
		},
		{
			name: "node not found", taint: agentTnt, node: "ip-10-9-9-9.internal",
			wantErr:    []string{`"ip-10-9-9-9.internal"`, "404 Not Found", `nodes "ip-10-9-9-9.internal" not found`, "spec.nodeName"},
			wantTaints: untouched, wantGets: 1,
		},
		{
			name: "token rejected", taint: agentTnt,
			setup:      func(f *fakeAPI) { f.token = "another" },
			wantErr:    []string{"401 Unauthorized", "token was rejected"},
			wantTaints: untouched,
		},
		{name: "bad taint", taint: "podid.io/agent-not-ready", wantErr: []string{`invalid taint "podid.io/agent-not-ready"`, "key:Effect"}, wantTaints: untouched},
		{name: "no node name", taint: agentTnt, node: "-", wantErr: []string{"no node name"}, wantTaints: untouched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			srv := httptest.NewTLSServer(f)
			defer srv.Close()
			node := testNode
			switch tt.node {
			case "-":
				node = ""
			case "":
			default:
				node = tt.node
			}
			err := RemoveTaint(context.Background(), TaintConfig{
				APIServer:  srv.URL,
				TokenFile:  writeToken(t),
				NodeName:   node,
				Taint:      tt.taint,
				HTTPClient: srv.Client(),
			})
			if tt.wantErr == nil && err != nil {
				t.Fatalf("RemoveTaint: %v", err)
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("RemoveTaint succeeded, want an error")
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
			}
			if strings.Contains(fmt.Sprint(err), testToken) {
				t.Errorf("error leaks the token: %v", err)
			}
			if diff := cmp.Diff(mustJSON(t, tt.wantTaints), f.taints()); diff != "" {
				t.Errorf("taints (-want +got):\n%s", diff)
			}
			if f.gets != tt.wantGets || f.patches != tt.wantPatches {
				t.Errorf("got %d GETs and %d PATCHes, want %d and %d", f.gets, f.patches, tt.wantGets, tt.wantPatches)
			}
		})
	}
}

// TestRemoveTaintInCluster uses the in-pod defaults: API server from the
// service environment variables and a CA file instead of a ready client.
func TestRemoveTaintInCluster(t *testing.T) {
	f := newFakeAPI(t)
	srv := httptest.NewTLSServer(f)
	defer srv.Close()
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := TaintConfig{TokenFile: writeToken(t), CAFile: caFile, NodeName: testNode, Taint: agentTnt}
	if err := RemoveTaint(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := RemoveTaint(context.Background(), cfg); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if f.patches != 1 {
		t.Errorf("got %d PATCHes over two runs, want 1", f.patches)
	}

	t.Run("bad CA file", func(t *testing.T) {
		garbage := filepath.Join(t.TempDir(), "ca.crt")
		os.WriteFile(garbage, []byte("not a certificate"), 0o644)
		for file, want := range map[string]string{garbage: "no PEM certificates", garbage + ".missing": "ca.crt.missing"} {
			c := cfg
			c.CAFile = file
			if err := RemoveTaint(context.Background(), c); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("CA %s: got %v, want error containing %q", file, err, want)
			}
		}
	})
	t.Run("no service environment", func(t *testing.T) {
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		if err := RemoveTaint(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
			t.Errorf("got %v, want an error naming KUBERNETES_SERVICE_HOST", err)
		}
	})
}

func TestParseTaint(t *testing.T) {
	tests := []struct {
		in      string
		want    Taint
		wantErr string
	}{
		{in: agentTnt, want: Taint{Key: "podid.io/agent-not-ready", Effect: "NoSchedule"}},
		{in: "dedicated=batch:NoExecute", want: Taint{Key: "dedicated", Value: "batch", Effect: "NoExecute"}},
		{in: "k:PreferNoSchedule", want: Taint{Key: "k", Effect: "PreferNoSchedule"}},
		{in: "podid.io/agent-not-ready", wantErr: "no :Effect"},
		{in: "k:noschedule", wantErr: "effect must be one of"},
		{in: ":NoSchedule", wantErr: "qualified name"},
		{in: "-k:NoSchedule", wantErr: "qualified name"},
		{in: "a/b/c:NoSchedule", wantErr: "qualified name"},
		{in: "Bad_Prefix/k:NoSchedule", wantErr: "DNS subdomain"},
		{in: "/k:NoSchedule", wantErr: "DNS subdomain"},
		{in: strings.Repeat("k", 64) + ":NoSchedule", wantErr: "qualified name"},
		{in: "k=bad value:NoSchedule", wantErr: "value must be"},
		{in: "k=a:b:NoSchedule", wantErr: "value must be"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTaint(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// FuzzParseTaint checks the parser never panics and that whatever it
// accepts round-trips through String.
func FuzzParseTaint(f *testing.F) {
	for _, s := range []string{agentTnt, "a=b:NoExecute", "k", "=:", "a/b:NoSchedule", "x=y=z:NoSchedule"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tnt, err := ParseTaint(s)
		if err != nil {
			return
		}
		again, err := ParseTaint(tnt.String())
		if err != nil || again != tnt {
			t.Fatalf("%q parsed to %+v, which reparses to %+v, %v", s, tnt, again, err)
		}
	})
}
