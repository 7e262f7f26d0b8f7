package api

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// snapshotBody returns the JSON body of an SDK wire snapshot: the bytes
// after the blank line that ends the headers.
func snapshotBody(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/sdk-snapshots/" + name)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(raw, []byte("\n\n"))
	if i < 0 {
		t.Fatalf("%s: no blank line before the body", name)
	}
	return bytes.TrimSpace(raw[i+2:])
}

func TestRequestMatchesSDKSnapshot(t *testing.T) {
	in := AssumeRoleForPodIdentityRequest{EksNodeName: "__EksNodeName__", InstanceID: "__InstanceId__", Token: "__Token__", Zone: "__Zone__"}
	got, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotBody(t, "eksauth-AssumeRoleForPodIdentity.request.snap")
	if !bytes.Equal(got, want) {
		t.Errorf("request body\n got %s\nwant %s", got, want)
	}
}

func TestResponseMatchesSDKSnapshot(t *testing.T) {
	want := snapshotBody(t, "eksauth-AssumeRoleForPodIdentity.response.snap")
	var out AssumeRoleForPodIdentityResponse
	if err := json.Unmarshal(want, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.Credentials.Expiration.Time(); !got.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expiration = %v, want 2000-01-01T00:00:00Z", got)
	}
	got, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("response body\n got %s\nwant %s", got, want)
	}
}

func TestErrorMatchesSDKSnapshot(t *testing.T) {
	want := snapshotBody(t, "eksauth-InvalidTokenException.error.snap")
	got, _ := json.Marshal(ErrorBody{Type: "InvalidTokenException", Message: "__Message__"})
	if !bytes.Equal(got, want) {
		t.Errorf("error body\n got %s\nwant %s", got, want)
	}
}

func TestEpoch(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		json string
	}{
		{time.Unix(1700000000, 0).UTC(), "1700000000"},
		{time.Unix(1700000000, 123e6).UTC(), "1700000000.123"},
		{time.Unix(1700000000, 5e6).UTC(), "1700000000.005"},
	} {
		b, err := json.Marshal(Epoch(tc.t))
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tc.t, b, err, tc.json)
		}
		var e Epoch
		if err := json.Unmarshal([]byte(tc.json), &e); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.t, e.Time()); diff != "" {
			t.Errorf("Unmarshal(%s) (-want +got):\n%s", tc.json, diff)
		}
	}
	var e Epoch
	if err := json.Unmarshal([]byte(`"yesterday"`), &e); err == nil {
		t.Error("a string timestamp was accepted")
	}
}
