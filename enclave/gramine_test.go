package enclave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGramineManifest(t *testing.T) {
	text, err := GramineManifest(testImage, GramineOptions{
		Threads: 16, EnclaveSize: "1G", PassEnv: []string{"TZ", "LANG"},
		Env: map[string]string{"APP_MODE": "prod"}, MemoryLimit: 64 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := string(text)
	inside := "/cloister/" + filepath.Base(testImage.Path)
	for _, want := range []string{
		`loader.entrypoint.uri = "file:` + DefaultGramineLibOS + `"`,
		`libos.entrypoint = "` + inside + `"`,
		`loader.argv = ["` + inside + `"]`,
		`sgx.enclave_size = "1G"`,
		`sgx.max_threads = 16`,
		`sgx.remote_attestation = "dcap"`,
		`sgx.debug = false`,
		`sgx.isvprodid = 7`,
		`sgx.isvsvn = 3`,
		`"file:` + testImage.Path + `",`,
		`{ path = "` + inside + `", uri = "file:` + testImage.Path + `" }`,
		`loader.env.CLOISTER_SEAL = "gramine"`,
		`loader.env.GOMEMLIMIT = "67108864"`,
		`loader.env.APP_MODE = "prod"`,
		`loader.env.LANG = { passthrough = true }`,
		`loader.env.TZ = { passthrough = true }`,
		`loader.env.CLOISTER_BOUNDARY_SHM = { passthrough = true }`,
		`{ type = "untrusted_shm", path = "/dev/shm/cloister", uri = "dev:/dev/shm/cloister" }`,
		testImage.Measurement.String(),
	} {
		if !strings.Contains(s, want) {
			t.Errorf("manifest lacks %s\n%s", want, s)
		}
	}
	// Only the allow-list passes through; the boundary stays on stdio.
	if strings.Contains(s, "CLOISTER_BOUNDARY_FD") || strings.Contains(s, "HOME") {
		t.Errorf("manifest passes more than the allow-list:\n%s", s)
	}
	// The trusted files list holds the LibOS and the image.
	tf := s[strings.Index(s, "sgx.trusted_files"):]
	tf = tf[:strings.Index(tf, "]")]
	if !strings.Contains(tf, DefaultGramineLibOS) || !strings.Contains(tf, testImage.Path) {
		t.Errorf("trusted files: %s", tf)
	}
	// Pipes only: no shared-memory mount, no region variable.
	text, err = GramineManifest(testImage, GramineOptions{PipeOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(text), "untrusted_shm") || strings.Contains(string(text), "CLOISTER_BOUNDARY_SHM") {
		t.Errorf("a pipe-only manifest mounts shared memory:\n%s", text)
	}
	// Defaults and debug.
	text, err = GramineManifest(testImage, GramineOptions{Debug: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`sgx.debug = true`, `sgx.enclave_size = "512M"`, `sgx.max_threads = 32`} {
		if !strings.Contains(string(text), want) {
			t.Errorf("manifest lacks %s", want)
		}
	}
}

func TestGramineManifestRejectsBadOptions(t *testing.T) {
	for _, o := range []GramineOptions{
		{EnclaveSize: "500M"},
		{EnclaveSize: "lots"},
		{EnclaveSize: "16M"},
		{Threads: 2},
		{PassEnv: []string{"BAD-NAME"}},
		{PassEnv: []string{"CLOISTER_BOUNDARY_FD"}},
		{PassEnv: []string{"CLOISTER_BOUNDARY_SHM"}},
		{MemoryLimit: 1 << 30, EnclaveSize: "512M"},
		{LogLevel: "loud"},
	} {
		if _, err := GramineManifest(testImage, o); err == nil {
			t.Errorf("accepted %+v", o)
		}
	}
}

func TestGramineCommands(t *testing.T) {
	sign, run, err := GramineCommands("/srv/counter.manifest", "/keys/k.pem")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sign, []string{"gramine-sgx-sign", "--manifest", "counter.manifest", "--output", "counter.manifest.sgx", "--key", "/keys/k.pem"}) {
		t.Fatalf("sign %q", sign)
	}
	if !slices.Equal(run, []string{"gramine-sgx", "counter"}) {
		t.Fatalf("run %q", run)
	}
	if _, _, err := GramineCommands("/srv/counter.toml", ""); err == nil {
		t.Fatal("accepted a manifest not named NAME.manifest")
	}

	dir := t.TempDir()
	b := gramineBackend{opts: GramineBackendOptions{Dir: dir}}
	signCmd, runCmd, err := b.commands(LaunchSpec{Name: "t", Image: testImage, Env: []string{"X=1"}})
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(testImage.Path)
	if signCmd.Dir != dir || !slices.Equal(signCmd.Args, []string{"gramine-sgx-sign", "--manifest", name + ".manifest", "--output", name + ".manifest.sgx"}) {
		t.Fatalf("sign command %q in %s", signCmd.Args, signCmd.Dir)
	}
	if runCmd.Dir != dir || !slices.Equal(runCmd.Args, []string{"gramine-sgx", name}) {
		t.Fatalf("run command %q in %s", runCmd.Args, runCmd.Dir)
	}
	if !slices.Contains(runCmd.Env, "X=1") {
		t.Fatalf("env %q", runCmd.Env)
	}
	written, err := os.ReadFile(filepath.Join(dir, name+".manifest"))
	if err != nil || !strings.Contains(string(written), `sgx.remote_attestation = "dcap"`) {
		t.Fatalf("manifest file: %v", err)
	}
}

func TestGramineBackendWithoutGramine(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := NewGramine(GramineBackendOptions{}).Launch(context.Background(), LaunchSpec{Name: "t", Image: testImage})
	if !errors.Is(err, ErrNoGramine) {
		t.Fatalf("launch without gramine: %v", err)
	}
}
