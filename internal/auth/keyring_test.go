package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadKeyringExample(t *testing.T) {
	kr, err := LoadKeyring(filepath.Join("testdata", "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{Name: "ops", AccessKeyID: "PODIDEXAMPLEADMIN001", SecretAccessKey: "exampleAdminSecretKey0123456789+/abcdefg", Scope: ScopeAdmin},
		{Name: "dashboard", AccessKeyID: "PODIDEXAMPLEREAD0001", SecretAccessKey: "exampleReadOnlySecretKey0123456789+/abcd", Scope: ScopeReadOnly},
		{Name: "node-agent", AccessKeyID: "PODIDEXAMPLEAGENT001", SecretAccessKey: "exampleAgentSecretKey0123456789+/abcdefg", Scope: ScopeAgent, Clusters: []string{"prod", "staging"}},
	}
	if diff := cmp.Diff(want, kr.Keys()); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
	k, ok := kr.Lookup("PODIDEXAMPLEAGENT001")
	if !ok || k.Name != "node-agent" {
		t.Errorf("Lookup = %v, %v", k, ok)
	}
	if _, ok := kr.Lookup("podidexampleagent001"); ok {
		t.Error("Lookup is case-insensitive; access key IDs are not")
	}
	// Callers must not be able to change the keyring through a returned key.
	k.Clusters[0] = "*"
	if k2, _ := kr.Lookup("PODIDEXAMPLEAGENT001"); k2.Clusters[0] != "prod" {
		t.Error("Lookup returned the keyring's own Clusters slice")
	}
}

func TestLoadKeyringFileMode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode os.FileMode
		warn bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, true},
		{0o644, true},
		{0o606, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#o", tt.mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			kr, err := LoadKeyring(path)
			if err != nil {
				t.Fatal(err)
			}
			w := kr.Warnings()
			if got := len(w) > 0; got != tt.warn {
				t.Fatalf("Warnings = %q, want a warning: %v", w, tt.warn)
			}
			if tt.warn && !strings.Contains(w[0], "chmod 600") {
				t.Errorf("warning %q does not say how to fix it", w[0])
			}
		})
	}
}

func TestLoadKeyringErrors(t *testing.T) {
	const secret = "topSecretValue0123456789abcdefghijklmnop"
	const secret2 = "otherSecretValue0123456789abcdefghijklmn"
	entry := func(name, id, sec, scope string, clusters ...string) map[string]any {
		m := map[string]any{"name": name, "accessKeyId": id, "secretAccessKey": sec, "scope": scope}
		if clusters != nil {
			m["clusters"] = clusters
		}
		return m
	}
	keysJSON := func(entries ...map[string]any) string {
		b, err := json.Marshal(map[string]any{"keys": entries})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name    string
		content string
		want    string // substring of the error; "" means it loads
	}{
		{"valid", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "admin"), entry("agent", "PODIDBBBBBBBBBBBBBBB", secret2, "agent", "*")), ""},
		{"same name twice is allowed for rotation", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "admin"), entry("ops", "PODIDBBBBBBBBBBBBBBB", secret2, "admin")), ""},
		{"duplicate access key id", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "admin"), entry("ops2", "PODIDAAAAAAAAAAAAAAA", secret2, "admin")),
			`keys[1] (name "ops2"): accessKeyId is the same as that of keys[0] (name "ops")`},
		{"unknown scope", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "root")), `keys[0] (name "ops"): scope "root"`},
		{"empty scope", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "")), `scope ""`},
		{"agent without clusters", keysJSON(entry("agent", "PODIDAAAAAAAAAAAAAAA", secret, "agent")), `keys[0] (name "agent"): scope "agent" requires clusters`},
		{"agent with empty clusters", keysJSON(entry("agent", "PODIDAAAAAAAAAAAAAAA", secret, "agent", []string{}...)), `requires clusters`},
		{"agent with a bad cluster name", keysJSON(entry("agent", "PODIDAAAAAAAAAAAAAAA", secret, "agent", "prod", "-bad")), `clusters[1] "-bad"`},
		{"clusters on an admin key", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "admin", "prod")), `clusters is only allowed with scope "agent"`},
		{"short secret", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", "tooShortSecret123", "admin")), `keys[0] (name "ops"): secretAccessKey must be 20-128 characters (it has 17)`},
		{"secret with a space", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", "topSecret Value0123456789", "admin")), `secretAccessKey must be printable ASCII`},
		{"short access key id", keysJSON(entry("ops", "PODIDAAAA", secret, "admin")), `keys[0] (name "ops"): accessKeyId must be 16-128 letters and digits`},
		{"secret pasted as access key id", keysJSON(entry("ops", secret2+"/x", secret, "admin")), `accessKeyId must be`},
		{"missing name", keysJSON(entry("", "PODIDAAAAAAAAAAAAAAA", secret, "admin")), `keys[0] (name ""): name is required`},
		{"unknown field", `{"keys":[{"name":"ops","accessKeyId":"PODIDAAAAAAAAAAAAAAA","secretAccessKey":"` + secret + `","scope":"agent","cluster":["prod"]}]}`, `unknown field "cluster"`},
		{"trailing data", keysJSON(entry("ops", "PODIDAAAAAAAAAAAAAAA", secret, "admin")) + `{}`, "after the top-level object"},
		{"not JSON", `keys: []`, "decoding JSON"},
		{"secret in a syntax error", `{"keys":[{"secretAccessKey":"` + secret + `" "name":"x"}]}`, "decoding JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			kr, err := LoadKeyring(path)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("LoadKeyring: %v", err)
				}
				if len(kr.Warnings()) != 0 {
					t.Errorf("Warnings = %q", kr.Warnings())
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadKeyring succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
			for _, s := range []string{secret, secret2, "tooShortSecret123", "topSecret Value"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}
}

func TestLoadKeyringMissingFileAndEmpty(t *testing.T) {
	if _, err := LoadKeyring(filepath.Join(t.TempDir(), "nope.json")); err == nil {
		t.Error("LoadKeyring of a missing file succeeded")
	}
	path := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(path, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Len() != 0 || len(kr.Warnings()) != 1 {
		t.Errorf("empty keyring: Len = %d, Warnings = %q; want 0 keys and one warning", kr.Len(), kr.Warnings())
	}
}

func TestGenerateKey(t *testing.T) {
	idPattern := regexp.MustCompile(`^PODID[A-Z0-9]{16}$`)
	secretPattern := regexp.MustCompile(`^[A-Za-z0-9+/]{40}$`)
	seen := map[string]bool{}
	var keys []Key
	for i := range 50 {
		k, err := GenerateKey(fmt.Sprintf("k%d", i), ScopeAgent, []string{"prod"})
		if err != nil {
			t.Fatal(err)
		}
		if !idPattern.MatchString(k.AccessKeyID) {
			t.Errorf("AccessKeyID %q does not match %s", k.AccessKeyID, idPattern)
		}
		if !secretPattern.MatchString(k.SecretAccessKey) {
			t.Errorf("secret does not match %s", secretPattern)
		}
		if seen[k.AccessKeyID] || seen[k.SecretAccessKey] {
			t.Fatal("GenerateKey repeated a value")
		}
		seen[k.AccessKeyID], seen[k.SecretAccessKey] = true, true
		keys = append(keys, k)
	}
	if _, err := NewKeyring(keys); err != nil {
		t.Errorf("generated keys do not form a keyring: %v", err)
	}

	for _, tt := range []struct {
		scope    Scope
		clusters []string
	}{
		{ScopeAgent, nil},
		{"superuser", nil},
		{ScopeAdmin, []string{"prod"}},
	} {
		if _, err := GenerateKey("x", tt.scope, tt.clusters); err == nil {
			t.Errorf("GenerateKey(%q, %q) succeeded", tt.scope, tt.clusters)
		}
	}
	if _, err := GenerateKey("", ScopeAdmin, nil); err == nil {
		t.Error("GenerateKey without a name succeeded")
	}
}

func TestMayCallCluster(t *testing.T) {
	tests := []struct {
		p       *Principal
		cluster string
		want    bool
	}{
		{&Principal{Scope: ScopeAdmin}, "prod", true},
		{&Principal{Scope: ScopeReadOnly}, "anything", true},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"prod", "staging"}}, "prod", true},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"prod", "staging"}}, "staging", true},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"prod", "staging"}}, "dev", false},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"prod"}}, "Prod", false},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"prod"}}, "", false},
		{&Principal{Scope: ScopeAgent, Clusters: []string{"*"}}, "dev", true},
		{&Principal{Scope: ScopeAgent}, "prod", false},
		{nil, "prod", false},
	}
	for _, tt := range tests {
		if got := tt.p.MayCallCluster(tt.cluster); got != tt.want {
			t.Errorf("%+v.MayCallCluster(%q) = %v, want %v", tt.p, tt.cluster, got, tt.want)
		}
	}
}

func TestSecretsStayOutOfLogs(t *testing.T) {
	k := agentKey
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("key", "key", k, "principal", principalOf(k))
	fmt.Fprintf(&buf, "%v %+v %s %#v", k, k, k, k)
	out := buf.String()
	if strings.Contains(out, k.SecretAccessKey) {
		t.Fatalf("output reveals the secret: %s", out)
	}
	for _, want := range []string{`"principal":{"name":"node-agent","accessKeyId":"PODIDAGENT0000000001","scope":"agent"}`, k.AccessKeyID} {
		if !strings.Contains(out, want) {
			t.Errorf("output %s lacks %s", out, want)
		}
	}
}
