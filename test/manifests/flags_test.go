package manifests

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// podidBinary builds cmd/podid once per test run, so every command's real
// --help is what the manifests are checked against.
var podidBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "podid-manifests-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "podid")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/podid/podid/cmd/podid")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build github.com/podid/podid/cmd/podid: %v\n%s", err, out)
	}
	return bin, nil
})

// helpFlags caches flagsOf per command.
var (
	helpMu    sync.Mutex
	helpCache = map[string]map[string]bool{}
)

// flagsOf returns the long flag names that "podid <command...> --help"
// lists, without the dashes.
func flagsOf(t testing.TB, command ...string) map[string]bool {
	t.Helper()
	key := strings.Join(command, " ")
	helpMu.Lock()
	defer helpMu.Unlock()
	if f, ok := helpCache[key]; ok {
		return f
	}
	bin, err := podidBinary()
	if err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(command), "--help") // command may share an array with a manifest's args
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podid %s --help: %v\n%s", key, err, out)
	}
	f, err := parseHelpFlags(string(out))
	if err != nil {
		t.Fatalf("podid %s --help: %v\n%s", key, err, out)
	}
	helpCache[key] = f
	return f
}

// helpFlagLine matches a flag line of cobra's usage: "  -h, --help   help"
// or "      --listen string   address".
var helpFlagLine = regexp.MustCompile(`^\s+(?:-[a-zA-Z], )?--([a-z0-9][a-z0-9-]*)\b`)

// parseHelpFlags reads the flag names from the "Flags:" and "Global Flags:"
// sections of cobra's help text.
func parseHelpFlags(help string) (map[string]bool, error) {
	flags := map[string]bool{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "Flags:" || line == "Global Flags:":
			in = true
		case line == "" || !strings.HasPrefix(line, " "):
			in = false
		case in:
			if m := helpFlagLine.FindStringSubmatch(line); m != nil {
				flags[m[1]] = true
			}
		}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("no flags found in the help text")
	}
	return flags, nil
}

// argFlags returns the long flags used in args ("--name=value" or
// "--name value"; a bare "--" ends the flags).
func argFlags(args []string) []string {
	var names []string
	for _, a := range args {
		if a == "--" {
			break
		}
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			names = append(names, name)
		}
	}
	return names
}

// flagValue returns the value given to --name in args, and whether it was
// given.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// subcommand splits podid's arguments into the command path ("agent
// initialize") and the rest.
func subcommand(args []string) (path, rest []string) {
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	return args[:i:i], args[i:]
}

// envFlag maps a PODID_<FLAG> environment variable to its flag name, as
// the commands read it: lower case, underscores as dashes.
func envFlag(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "PODID_")
	if !ok {
		return "", false
	}
	return strings.ReplaceAll(strings.ToLower(rest), "_", "-"), true
}

func TestParseHelpFlags(t *testing.T) {
	help := `Run podid server.

Usage:
  podid server [flags]

Flags:
      --account string   12-digit id (default "000000000000")
  -h, --help             help for server
      --tls-cert string  PEM file; --not-a-flag in a description

Global Flags:
      --log-level string   level

Use "podid server --help" for more.
      --outside   not in a section
`
	got, err := parseHelpFlags(help)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"account", "help", "tls-cert", "log-level"}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing %q in %v", w, got)
		}
	}
	if _, err := parseHelpFlags("Usage:\n  podid\n"); err == nil {
		t.Error("help text without flags: no error")
	}
}

func TestArgFlags(t *testing.T) {
	args := []string{"--a=1", "--b", "two", "-c", "--d=x=y", "--", "--e"}
	got := strings.Join(argFlags(args), ",")
	if got != "a,b,d" {
		t.Errorf("argFlags = %s, want a,b,d", got)
	}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"a", "1", true},
		{"b", "two", true},
		{"d", "x=y", true},
		{"c", "", false},
	} {
		v, ok := flagValue(args, tc.name)
		if v != tc.want || ok != tc.ok {
			t.Errorf("flagValue(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.want, tc.ok)
		}
	}
	path, rest := subcommand([]string{"agent", "initialize", "--x"})
	if strings.Join(path, " ") != "agent initialize" || len(rest) != 1 {
		t.Errorf("subcommand = %v, %v", path, rest)
	}
	if f, ok := envFlag("PODID_STS_ENDPOINT"); !ok || f != "sts-endpoint" {
		t.Errorf("envFlag = %q, %v", f, ok)
	}
}
