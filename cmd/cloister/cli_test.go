package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTyposAndBadValues: a typo in a command or a flag is a usage error
// (exit 2) that suggests the right name; a bad value names the flag and
// says what is wanted; the usage printed is the one command's usage line,
// not its whole help.
func TestTyposAndBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"sned", "a.b", "x"}, []string{`unknown command "sned"`, "did you mean send?", "Usage:\n  cloister COMMAND [flags] [args]\n"}},
		{[]string{"enclave", "biuld", "./x"}, []string{`cloister enclave: unknown command "biuld"`, "did you mean build?"}},
		{[]string{"coordinator", "statsu"}, []string{`cloister coordinator: unknown command "statsu"`, "did you mean status?"}},
		{[]string{"manifest", "nothing"}, []string{`unknown command "nothing"`, "(want check, client, hash, sign, verify-update)"}},
		{[]string{"enclave"}, []string{"cloister enclave: missing command (want build, gramine-manifest, measure)"}},
		{[]string{"request", "--tiemout", "2s", "a.b", "x"}, []string{"unknown flag --tiemout; did you mean --timeout?", "Usage:\n  cloister request ADDRESS [BODY] [flags]\n"}},
		{[]string{"request", "--timeout", "2", "a.b", "x"}, []string{`--timeout "2": want a duration with a unit, such as 2s`}},
		{[]string{"send", "--count", "many", "a.b", "x"}, []string{`--count "many": want a whole number`}},
		{[]string{"request", "--timeout"}, []string{"flag needs an argument: --timeout"}},
		{[]string{"request"}, []string{"want ADDRESS [BODY], got 0 arguments", "Run 'cloister request --help' for details."}},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		missing := slices.DeleteFunc(slices.Clone(tc.want), func(w string) bool { return strings.Contains(errOut, w) })
		if code != exitUsage || out != "" || len(missing) > 0 || strings.Contains(errOut, "Flags:") {
			t.Errorf("%q: exit %d (want %d), stdout %q; stderr lacks %q or is the whole help:\n%s", tc.args, code, exitUsage, out, missing, errOut)
		}
	}
}

// TestHelpAndCompletion: --help prints the command's help on stdout and
// exits 0; 'completion' prints a script for each shell, which completes
// the verbs.
func TestHelpAndCompletion(t *testing.T) {
	code, out, errOut := runCLI(t, "request", "--help")
	if code != exitOK || !strings.Contains(out, "Usage:\n  cloister request ADDRESS [BODY] [flags]") ||
		!strings.Contains(out, "-s, --server URLs") || !strings.Contains(out, "$NATS_URL") {
		t.Fatalf("request --help: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runCLI(t, "completion", shell)
		if code != exitOK || !strings.Contains(out, "cloister") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes\n%s", shell, code, len(out), errOut)
		}
	}
	// The scripts ask the binary itself (cloister __complete ...).
	code, out, _ = runCLI(t, "__complete", "coord")
	if code != exitOK || !strings.Contains(out, "coordinator") {
		t.Fatalf("__complete coord: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "__complete", "coordinator", "ver")
	if code != exitOK || !strings.Contains(out, "verify") {
		t.Fatalf("__complete coordinator ver: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "__complete", "node", "--log-format", "")
	if code != exitOK || !strings.Contains(out, "json\n") || !strings.Contains(out, "text\n") {
		t.Fatalf("__complete node --log-format: exit %d\n%s", code, out)
	}
}

// TestServerFlagAndNATSURL: the bus verbs connect to -s/--server, by
// default $NATS_URL; --servers still works; a server that cannot be
// reached is named in the error.
func TestServerFlagAndNATSURL(t *testing.T) {
	url := busTestNode(t)
	dead := "nats://" + freePort(t)
	ctx := context.Background()
	// "no handlers" proves the request reached the node.
	t.Setenv("NATS_URL", url)
	if code, _, errOut := busRunCLI(ctx, "", "request", "nobody.home", "x"); code != exitFailure || !strings.Contains(errOut, "no handlers") {
		t.Fatalf("with NATS_URL: exit %d %q", code, errOut)
	}
	t.Setenv("NATS_URL", dead)
	for _, args := range [][]string{
		{"request", "-s", url, "nobody.home", "x"},
		{"request", "--server", url, "nobody.home", "x"},
		{"request", "--servers", url, "nobody.home", "x"},
	} {
		if code, _, errOut := busRunCLI(ctx, "", args...); code != exitFailure || !strings.Contains(errOut, "no handlers") {
			t.Fatalf("%q: exit %d %q", args, code, errOut)
		}
	}
	code, _, errOut := busRunCLI(ctx, "", "request", "nobody.home", "x")
	if code != exitFailure || !strings.Contains(errOut, "connecting to "+dead+" (-s/--server)") {
		t.Fatalf("unreachable NATS_URL: exit %d %q", code, errOut)
	}
	hidden := "nats://alice:s3cret@" + strings.TrimPrefix(dead, "nats://")
	code, _, errOut = busRunCLI(ctx, "", "send", "-s", hidden, "a.b", "x")
	if code != exitFailure || strings.Contains(errOut, "s3cret") || !strings.Contains(errOut, "alice:xxxxx@") {
		t.Fatalf("unreachable server with a password: exit %d %q", code, errOut)
	}
}

// TestEnclaveBuildRefusesNonImages: enclave build checks PKG before
// building: not a main package, no trusted runtime, host-side packages
// linked in, or several packages are usage errors naming PKG and why.
func TestEnclaveBuildRefusesNonImages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out := filepath.Join(t.TempDir(), "x.img")
	for _, tc := range []struct {
		pkg  string
		want string
	}{
		{"./bus", "it is package bus, not a main package"},
		{"./examples/counter", "does not link the trusted runtime github.com/cloister-dev/cloister/trusted"},
		{"./cmd/cloister", "links host-side packages an enclave must not contain: github.com/cloister-dev/cloister/bus"},
		{"./examples/counter/...", " packages; give one main package"},
	} {
		code, _, errOut := runCLI(t, "enclave", "build", "-C", "../..", tc.pkg, "-o", out)
		if code != exitUsage || !strings.Contains(errOut, "PKG "+tc.pkg) || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d\n%s", tc.pkg, code, errOut)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("an image was written: %v", err)
	}
	code, _, errOut := runCLI(t, "enclave", "build", "-C", "../..", "./no/such/pkg", "-o", out)
	if code != exitFailure || !strings.Contains(errOut, "PKG ./no/such/pkg") {
		t.Fatalf("missing package: exit %d\n%s", code, errOut)
	}
}

// TestCoordinatorStateDefault: without --state the coordinator keeps its
// state under the user's config directory, keyed by the node name, not by
// the cloister binary.
func TestCoordinatorStateDefault(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", t.TempDir())
	for name, want := range map[string]string{
		"":   filepath.Join(cfg, "cloister", "coordinator", "default"),
		"n1": filepath.Join(cfg, "cloister", "coordinator", "n1"),
	} {
		if got, err := defaultCoordinatorState(name); err != nil || got != want {
			t.Errorf("name %q: %q, %v; want %q", name, got, err, want)
		}
	}
	for _, bad := range []string{"..", "a/b", "/abs"} {
		if _, err := defaultCoordinatorState(bad); err == nil || !strings.Contains(err.Error(), "--name") {
			t.Errorf("name %q: %v", bad, err)
		}
	}
}
