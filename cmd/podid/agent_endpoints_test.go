package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAgentEndpointFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		want    []string
		wantErr string
	}{
		{name: "one", args: []string{"--endpoint", "https://a:8443"}, want: []string{"https://a:8443"}},
		{name: "comma list", args: []string{"--endpoint", "https://a:8443, https://b:8443"}, want: []string{"https://a:8443", "https://b:8443"}},
		{name: "repeated", args: []string{"--endpoint", "http://a", "--endpoint", "http://b"}, want: []string{"http://a", "http://b"}},
		{name: "environment", env: "https://a,https://b", want: []string{"https://a", "https://b"}},
		{name: "flag wins over environment", args: []string{"--endpoint", "https://c"}, env: "https://a,https://b", want: []string{"https://c"}},
		{name: "empty entry", args: []string{"--endpoint", "https://a,,https://b"}, wantErr: "empty URL"},
		{name: "not a URL", args: []string{"--endpoint", "podid:8443"}, wantErr: "want an http://"},
		{name: "duplicate", args: []string{"--endpoint", "https://a,https://a"}, wantErr: "listed twice"},
		{name: "user info", args: []string{"--endpoint", "https://u:secret@a"}, wantErr: "user information"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("PODID_ENDPOINT", tt.env)
			}
			cmd := newAgentCmd()
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := applyLayers(cmd.Flags(), nil); err != nil {
				t.Fatal(err)
			}
			raw, err := cmd.Flags().GetStringSlice("endpoint")
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseEndpoints(raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q shows the URL's password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}
