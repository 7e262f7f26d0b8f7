// Package auth verifies the AWS Signature Version 4 on calls to podid's
// AWS-compatible APIs and holds the static access keys those calls are signed
// with. Callers use the real AWS SDKs with an overridden endpoint, so the
// canonicalization here follows the SDKs' signers byte for byte.
package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
)

// Scope is what a key may do.
type Scope string

// Scopes of an access key.
const (
	// ScopeAdmin may call every API: associations, clusters, audit.
	ScopeAdmin Scope = "admin"
	// ScopeReadOnly may only describe and list.
	ScopeReadOnly Scope = "read-only"
	// ScopeAgent is a node agent: it may only call AssumeRoleForPodIdentity
	// for the clusters in its key.
	ScopeAgent Scope = "agent"
)

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool {
	return s == ScopeAdmin || s == ScopeReadOnly || s == ScopeAgent
}

// AllClusters in an agent key's Clusters lets it call for any cluster.
const AllClusters = "*"

// Key is one static access key. The JSON tags are the keyring file format.
type Key struct {
	Name            string `json:"name"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	Scope           Scope  `json:"scope"`
	// Clusters are the clusters an agent key may call for; required and
	// non-empty for ScopeAgent ("*" means all), not allowed otherwise.
	Clusters []string `json:"clusters,omitempty"`
}

// String keeps the secret out of %v and %s.
func (k Key) String() string {
	return fmt.Sprintf("{Name:%q AccessKeyID:%q Scope:%q Clusters:%q}", k.Name, k.AccessKeyID, k.Scope, k.Clusters)
}

// GoString keeps the secret out of %#v.
func (k Key) GoString() string { return "auth.Key" + k.String() }

// LogValue keeps the secret out of logs.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", k.Name),
		slog.String("accessKeyId", k.AccessKeyID),
		slog.String("scope", string(k.Scope)),
	)
}

// Keyring is an immutable set of access keys, looked up by access key ID.
// It is safe for concurrent use.
type Keyring struct {
	keys     []Key
	byID     map[string]int
	warnings []string
}

// keyringFile is the on-disk format.
type keyringFile struct {
	Keys []Key `json:"keys"`
}

const (
	minAccessKeyIDLen = 16
	maxAccessKeyIDLen = 128
	minSecretLen      = 20
	maxSecretLen      = 128
	maxNameLen        = 128
)

// clusterNamePattern is EKS's clusterName constraint (1-100 characters).
var clusterNamePattern = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$`)

// LoadKeyring reads a JSON keyring file:
//
//	{"keys": [
//	  {"name": "ops", "accessKeyId": "...", "secretAccessKey": "...", "scope": "admin"},
//	  {"name": "node-agent", "accessKeyId": "...", "secretAccessKey": "...", "scope": "agent", "clusters": ["prod"]}
//	]}
//
// Problems that do not stop the server, such as a file that group or others
// may read, are returned by (*Keyring).Warnings. Errors name the entry and
// the field but never quote a secret, nor an access key ID that failed
// validation (it may be a secret pasted into the wrong field).
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	// A keyring is tiny; the bound keeps a wrong path (a device, a huge log)
	// from eating memory.
	const maxFileSize = 4 << 20
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keyring: reading %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("keyring: %s is larger than %d bytes", path, maxFileSize)
	}
	kr, err := parseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		kr.warnings = append(kr.warnings, fmt.Sprintf(
			"keyring %s holds secret keys but is readable by group or others (mode %#o); chmod 600 it",
			path, fi.Mode().Perm()))
	}
	return kr, nil
}

// parseKeyring decodes and validates the keyring file format.
func parseKeyring(data []byte) (*Keyring, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	// A misspelt field ("cluster", "secretKey") would otherwise silently
	// weaken or disable a key.
	dec.DisallowUnknownFields()
	var file keyringFile
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("decoding JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding JSON: unexpected data after the top-level object")
	}
	kr, err := NewKeyring(file.Keys)
	if err != nil {
		return nil, err
	}
	if len(file.Keys) == 0 {
		kr.warnings = append(kr.warnings, "keyring has no keys; every signed request will be rejected")
	}
	return kr, nil
}

// NewKeyring validates keys and returns a keyring holding copies of them:
// access key IDs are 16-128 letters and digits and unique, secrets at least
// 20 characters, scopes known, and agent keys name their clusters.
func NewKeyring(keys []Key) (*Keyring, error) {
	kr := &Keyring{keys: make([]Key, 0, len(keys)), byID: make(map[string]int, len(keys))}
	for i, k := range keys {
		if err := validateKey(k); err != nil {
			return nil, fmt.Errorf("keys[%d] (name %q): %w", i, k.Name, err)
		}
		if j, dup := kr.byID[k.AccessKeyID]; dup {
			return nil, fmt.Errorf("keys[%d] (name %q): accessKeyId is the same as that of keys[%d] (name %q)", i, k.Name, j, keys[j].Name)
		}
		k.Clusters = slices.Clone(k.Clusters)
		kr.byID[k.AccessKeyID] = len(kr.keys)
		kr.keys = append(kr.keys, k)
	}
	return kr, nil
}

func validateKey(k Key) error {
	if k.Name == "" {
		return errors.New("name is required")
	}
	if len(k.Name) > maxNameLen || strings.IndexFunc(k.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("name must be at most %d printable characters", maxNameLen)
	}
	// The values below are never quoted: a secret may have been pasted
	// into the wrong field.
	if n := len(k.AccessKeyID); n < minAccessKeyIDLen || n > maxAccessKeyIDLen || !isAlnum(k.AccessKeyID) {
		return fmt.Errorf("accessKeyId must be %d-%d letters and digits", minAccessKeyIDLen, maxAccessKeyIDLen)
	}
	if n := len(k.SecretAccessKey); n < minSecretLen || n > maxSecretLen {
		return fmt.Errorf("secretAccessKey must be %d-%d characters (it has %d)", minSecretLen, maxSecretLen, n)
	}
	if strings.IndexFunc(k.SecretAccessKey, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return errors.New("secretAccessKey must be printable ASCII without spaces")
	}
	if !k.Scope.Valid() {
		return fmt.Errorf("scope %q is not one of %q, %q, %q", k.Scope, ScopeAdmin, ScopeReadOnly, ScopeAgent)
	}
	if k.Scope != ScopeAgent {
		if len(k.Clusters) > 0 {
			return fmt.Errorf("clusters is only allowed with scope %q", ScopeAgent)
		}
		return nil
	}
	if len(k.Clusters) == 0 {
		return fmt.Errorf("scope %q requires clusters (a list of cluster names, or [%q] for all)", ScopeAgent, AllClusters)
	}
	for j, c := range k.Clusters {
		if c != AllClusters && !clusterNamePattern.MatchString(c) {
			return fmt.Errorf("clusters[%d] %q is not a cluster name or %q", j, c, AllClusters)
		}
	}
	return nil
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Lookup returns the key with the given access key ID.
func (kr *Keyring) Lookup(accessKeyID string) (Key, bool) {
	if kr == nil {
		return Key{}, false
	}
	i, ok := kr.byID[accessKeyID]
	if !ok {
		return Key{}, false
	}
	k := kr.keys[i]
	k.Clusters = slices.Clone(k.Clusters)
	return k, true
}

// Len is the number of keys.
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	return len(kr.keys)
}

// Keys returns copies of the keys in file order.
func (kr *Keyring) Keys() []Key {
	if kr == nil {
		return nil
	}
	out := make([]Key, len(kr.keys))
	for i, k := range kr.keys {
		k.Clusters = slices.Clone(k.Clusters)
		out[i] = k
	}
	return out
}

// Warnings are problems found while loading that do not stop the server but
// deserve a log line, such as a keyring file others may read.
func (kr *Keyring) Warnings() []string {
	if kr == nil {
		return nil
	}
	return slices.Clone(kr.warnings)
}

const (
	generatedKeyPrefix = "PODID"
	upperAlnum         = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretAlphabet     = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// GenerateKey makes a new random key: an access key ID of "PODID" and 16
// uppercase letters and digits, and a 40-character secret drawn from the
// base64 alphabet, as AWS's own keys look.
func GenerateKey(name string, scope Scope, clusters []string) (Key, error) {
	id, err := randomString(upperAlnum, 16)
	if err != nil {
		return Key{}, err
	}
	secret, err := randomString(secretAlphabet, 40)
	if err != nil {
		return Key{}, err
	}
	k := Key{
		Name:            name,
		AccessKeyID:     generatedKeyPrefix + id,
		SecretAccessKey: secret,
		Scope:           scope,
		Clusters:        slices.Clone(clusters),
	}
	if err := validateKey(k); err != nil {
		return Key{}, err
	}
	return k, nil
}

// randomString draws n characters uniformly from alphabet (at most 256
// characters) with crypto/rand, rejecting bytes that would bias the draw.
func randomString(alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generating key: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}
