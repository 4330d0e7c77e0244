package enclave

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/boundary/shm"
)

// Gramine defaults.
const (
	// DefaultGramineLibOS is where Debian and Ubuntu packages install
	// Gramine's LibOS (the loader's entrypoint).
	DefaultGramineLibOS = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
	// DefaultGramineEnclaveSize is the enclave size of a generated manifest.
	DefaultGramineEnclaveSize = "512M"
	// DefaultGramineThreads is sgx.max_threads of a generated manifest: the
	// Go runtime needs threads of its own (sysmon, GC workers, blocked
	// system calls) beyond the handler workers.
	DefaultGramineThreads = 32
	// GramineImageDir is where the image appears inside the enclave.
	GramineImageDir = "/cloister"
	// GramineSHMDir is the directory of the untrusted shared-memory mount
	// a generated manifest declares (the same path on the host and inside
	// the enclave): the host creates each instance's boundary region there.
	GramineSHMDir = "/dev/shm/cloister"
	// GramineSGXCommand and GramineSignCommand are Gramine's launcher and
	// signer.
	GramineSGXCommand  = "gramine-sgx"
	GramineSignCommand = "gramine-sgx-sign"
)

// GramineOptions configure a generated Gramine manifest.
type GramineOptions struct {
	// EnclaveSize is sgx.enclave_size, a power of two with a K, M or G
	// suffix (default DefaultGramineEnclaveSize).
	EnclaveSize string
	// Threads is sgx.max_threads, the number of TCS (default
	// DefaultGramineThreads).
	Threads int
	// LibOS is the path of Gramine's libsysdb.so (default
	// DefaultGramineLibOS).
	LibOS string
	// Debug builds a debug enclave (sgx.debug = true): its memory is
	// readable by the host. Never in production; verifiers refuse it by
	// default.
	Debug bool
	// PassEnv lists host environment variables passed through into the
	// enclave (loader.env.NAME = { passthrough = true }). Everything else
	// is dropped. The enclave treats them as untrusted input.
	PassEnv []string
	// Env sets fixed variables, measured into the enclave.
	Env map[string]string
	// MemoryLimit is the image's Go memory limit in bytes (GOMEMLIMIT);
	// 0 leaves the image's own default.
	MemoryLimit int64
	// TrustedFiles are further files to measure in (sgx.trusted_files).
	TrustedFiles []string
	// LogLevel is loader.log_level (default "error").
	LogLevel string
	// PipeOnly leaves the untrusted shared-memory mount out of the
	// manifest: frames then always cross the enclave's stdin and stdout.
	PipeOnly bool
}

func (o *GramineOptions) defaults() error {
	if o.EnclaveSize == "" {
		o.EnclaveSize = DefaultGramineEnclaveSize
	}
	n, err := ParseSize(o.EnclaveSize)
	if err != nil {
		return err
	}
	if n&(n-1) != 0 {
		return fmt.Errorf("enclave: gramine: enclave size %s is not a power of two", o.EnclaveSize)
	}
	if n < 64<<20 {
		return fmt.Errorf("enclave: gramine: enclave size %s is too small for a Go image (at least 64M)", o.EnclaveSize)
	}
	if o.Threads == 0 {
		o.Threads = DefaultGramineThreads
	}
	if o.Threads < 4 || o.Threads > 4096 {
		return fmt.Errorf("enclave: gramine: %d threads: need 4 to 4096 (the Go runtime needs several)", o.Threads)
	}
	if o.LibOS == "" {
		o.LibOS = DefaultGramineLibOS
	}
	if o.LogLevel == "" {
		o.LogLevel = "error"
	}
	switch o.LogLevel {
	case "none", "error", "warning", "debug", "trace", "all":
	default:
		return fmt.Errorf("enclave: gramine: log level %q: want none, error, warning, debug, trace or all", o.LogLevel)
	}
	if o.MemoryLimit < 0 {
		return fmt.Errorf("enclave: gramine: negative memory limit")
	}
	if o.MemoryLimit > 0 && o.MemoryLimit >= n {
		return fmt.Errorf("enclave: gramine: memory limit %d is not below the enclave size %s", o.MemoryLimit, o.EnclaveSize)
	}
	for _, k := range append(slices.Clone(o.PassEnv), mapKeys(o.Env)...) {
		if !validEnvName(k) {
			return fmt.Errorf("enclave: gramine: invalid environment variable name %q", k)
		}
		if k == boundary.EnvFD || k == boundary.EnvGramineSeal || k == shm.EnvRegion {
			return fmt.Errorf("enclave: gramine: %s is set by the manifest itself", k)
		}
	}
	return nil
}

// ParseSize parses a size in bytes with an optional K, M or G suffix
// (powers of 1024): "512M", "1G", "65536".
func ParseSize(s string) (int64, error) {
	num, mul := s, int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K', 'k':
			num, mul = s[:len(s)-1], 1<<10
		case 'M', 'm':
			num, mul = s[:len(s)-1], 1<<20
		case 'G', 'g':
			num, mul = s[:len(s)-1], 1<<30
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mul {
		return 0, fmt.Errorf("enclave: size %q: want a positive number with an optional K, M or G suffix", s)
	}
	return n * mul, nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func mapKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// GramineManifest renders a Gramine manifest (TOML) that runs img as an SGX
// enclave: Gramine's LibOS as the loader's entrypoint, the image as the
// LibOS entrypoint (mounted read-only at /cloister/NAME and measured as a
// trusted file), DCAP remote attestation (so the image reads its quote and
// seal keys from /dev/attestation, which the LibOS provides), the thread
// count and enclave size, and an environment allow-list. The handshake
// crosses the enclave's stdin and stdout; then, unless opts.PipeOnly,
// frames cross a shared-memory region (package boundary/shm) in a file
// under GramineSHMDir, which the manifest mounts as untrusted shared memory
// (fs.mounts type "untrusted_shm": mappings of it stay outside the
// enclave, visible to the host) and whose path the host passes in
// CLOISTER_BOUNDARY_SHM; stdin and stdout then carry only doorbells. The
// region holds only what the pipes would carry: frames the host sees
// anyway. Sign the manifest with gramine-sgx-sign and run it with
// gramine-sgx (see GramineCommands).
func GramineManifest(img *Image, opts GramineOptions) ([]byte, error) {
	if img == nil {
		return nil, errors.New("enclave: gramine: no image")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	inside := GramineImageDir + "/" + filepath.Base(img.Path)
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Gramine manifest for the Cloister enclave image %s\n", filepath.Base(img.Path))
	w("# generated by 'cloister enclave gramine-manifest'; do not edit by hand.\n")
	w("#   image:       %s\n", img.Path)
	w("#   sha256:      %s (the simulated MRENCLAVE; under SGX the MRENCLAVE\n", img.Measurement)
	w("#                covers this manifest, the LibOS and the image)\n")
	w("#   package:     %s (%s)\n\n", img.Meta.Package, img.Meta.GoVersion)

	w("# The loader starts Gramine's LibOS, which starts the static Go image.\n")
	w("loader.entrypoint.uri = %s\n", tomlString("file:"+opts.LibOS))
	w("libos.entrypoint = %s\n", tomlString(inside))
	w("loader.argv = [%s]\n", tomlString(inside))
	w("loader.log_level = %s\n\n", tomlString(opts.LogLevel))

	w("# Environment: fixed values are measured; only the listed host variables\n")
	w("# pass through, and the image treats them as untrusted input.\n")
	w("loader.env.%s = \"gramine\"\n", boundary.EnvGramineSeal)
	if opts.MemoryLimit > 0 {
		w("loader.env.GOMEMLIMIT = %s\n", tomlString(strconv.FormatInt(opts.MemoryLimit, 10)))
	}
	for _, k := range mapKeys(opts.Env) {
		w("loader.env.%s = %s\n", k, tomlString(opts.Env[k]))
	}
	pass := slices.Clone(opts.PassEnv)
	slices.Sort(pass)
	pass = slices.Compact(pass)
	for _, k := range pass {
		if _, fixed := opts.Env[k]; fixed {
			continue
		}
		w("loader.env.%s = { passthrough = true }\n", k)
	}
	if !opts.PipeOnly {
		w("# The boundary region: the host creates a file under %s and\n", GramineSHMDir)
		w("# names it here; see the untrusted_shm mount below.\n")
		w("loader.env.%s = { passthrough = true }\n", shm.EnvRegion)
	}
	w("\n")

	w("# The image is mounted read-only from the host and measured below.\n")
	w("# /dev/attestation (quote, user_report_data, keys/_sgx_mrenclave,\n")
	w("# keys/_sgx_mrsigner) is provided by the LibOS itself when\n")
	w("# sgx.remote_attestation is set; /tmp is enclave memory.\n")
	if !opts.PipeOnly {
		w("# %s is untrusted shared memory: the boundary's rings, which the\n", GramineSHMDir)
		w("# host reads and writes directly (frames cross it instead of stdin and\n")
		w("# stdout, which then carry only doorbells). It holds only frames the\n")
		w("# host sees anyway; the image checks every position it reads there.\n")
	}
	w("fs.mounts = [\n")
	w("  { path = %s, uri = %s },\n", tomlString(inside), tomlString("file:"+img.Path))
	w("  { type = \"tmpfs\", path = \"/tmp\" },\n")
	if !opts.PipeOnly {
		w("  { type = \"untrusted_shm\", path = %s, uri = %s },\n", tomlString(GramineSHMDir), tomlString("dev:"+GramineSHMDir))
	}
	w("]\n\n")

	w("sgx.debug = %t\n", opts.Debug)
	w("sgx.enclave_size = %s\n", tomlString(opts.EnclaveSize))
	w("sgx.max_threads = %d\n", opts.Threads)
	w("sgx.remote_attestation = \"dcap\"\n")
	w("sgx.isvprodid = %d\n", img.Meta.ProductID)
	w("sgx.isvsvn = %d\n", img.Meta.SVN)
	w("sgx.trusted_files = [\n")
	w("  %s,\n", tomlString("file:"+opts.LibOS))
	w("  %s,\n", tomlString("file:"+img.Path))
	for _, f := range opts.TrustedFiles {
		w("  %s,\n", tomlString("file:"+f))
	}
	w("]\n\n")
	w("# Deliver SIGTERM from the host, so the image can shut down cleanly.\n")
	w("sys.enable_sigterm_injection = true\n")
	return b.Bytes(), nil
}

// GramineCommands returns the commands that sign the manifest at
// manifestPath (NAME.manifest) and launch the enclave: gramine-sgx-sign
// --manifest NAME.manifest --output NAME.manifest.sgx, then gramine-sgx NAME,
// both run in the manifest's directory. A non-empty key is the signing key
// (otherwise Gramine's default key).
func GramineCommands(manifestPath, key string) (sign, run []string, err error) {
	dir, base := filepath.Split(manifestPath)
	name, ok := strings.CutSuffix(base, ".manifest")
	if !ok || name == "" {
		return nil, nil, fmt.Errorf("enclave: gramine: manifest %q must be named NAME.manifest", manifestPath)
	}
	_ = dir
	sign = []string{GramineSignCommand, "--manifest", base, "--output", base + ".sgx"}
	if key != "" {
		sign = append(sign, "--key", key)
	}
	return sign, []string{GramineSGXCommand, name}, nil
}

// GramineBackendOptions configure the gramine backend.
type GramineBackendOptions struct {
	// Manifest shapes the generated manifest.
	Manifest GramineOptions
	// Dir is where NAME.manifest and NAME.manifest.sgx are written;
	// default the image's directory.
	Dir string
	// Key is the signing key (default Gramine's).
	Key string
}

// NewGramine returns the gramine backend: each instance runs the image under
// gramine-sgx with a generated, signed manifest; the handshake crosses its
// stdin and stdout, then frames cross a shared-memory region in a file
// under GramineSHMDir (unless Manifest.PipeOnly; see GramineManifest). The
// enclave takes its evidence and seal keys from /dev/attestation itself;
// the host's issuer is not used.
func NewGramine(opts GramineBackendOptions) Backend { return gramineBackend{opts: opts} }

type gramineBackend struct{ opts GramineBackendOptions }

func (gramineBackend) Name() string   { return "gramine" }
func (gramineBackend) Isolated() bool { return true }

// ErrNoGramine is wrapped when gramine-sgx or gramine-sgx-sign is not
// installed.
var ErrNoGramine = errors.New("enclave: Gramine is not installed (gramine-sgx not in PATH); use the process backend on machines without SGX")

// commands prepares the manifest for spec and returns the sign and run
// commands, ready to start.
func (b gramineBackend) commands(spec LaunchSpec) (sign, run *exec.Cmd, err error) {
	if spec.Image == nil {
		return nil, nil, errors.New("enclave: gramine backend needs an image")
	}
	dir := b.opts.Dir
	if dir == "" {
		dir = filepath.Dir(spec.Image.Path)
	}
	text, err := GramineManifest(spec.Image, b.opts.Manifest)
	if err != nil {
		return nil, nil, err
	}
	name := strings.TrimSuffix(filepath.Base(spec.Image.Path), filepath.Ext(spec.Image.Path))
	manifest := filepath.Join(dir, name+".manifest")
	signArgs, runArgs, err := GramineCommands(manifest, b.opts.Key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(manifest, text, 0o644); err != nil {
		return nil, nil, fmt.Errorf("enclave: gramine: write manifest: %w", err)
	}
	sign = exec.Command(signArgs[0], signArgs[1:]...)
	sign.Dir = dir
	run = exec.Command(runArgs[0], runArgs[1:]...)
	run.Dir = dir
	run.Env = childEnv(false, spec.Env)
	return sign, run, nil
}

func (b gramineBackend) Launch(ctx context.Context, spec LaunchSpec) (Process, error) {
	for _, c := range []string{GramineSGXCommand, GramineSignCommand} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoGramine, err)
		}
	}
	sign, run, err := b.commands(spec)
	if err != nil {
		return nil, err
	}
	if out, err := sign.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("enclave: gramine: %s: %w:\n%s", strings.Join(sign.Args, " "), err, out)
	}
	ecallR, ecallW, ocallR, ocallW, err := boundaryPipes()
	if err != nil {
		return nil, fmt.Errorf("enclave: gramine: %w", err)
	}
	run.Stdin, run.Stdout = ecallR, ocallW
	var region *shm.Region
	var regionPath string
	if !b.opts.Manifest.PipeOnly {
		region, regionPath, err = gramineRegion(spec)
		if err != nil {
			spec.logger().Warn("enclave: gramine: no shared-memory boundary; frames cross stdin and stdout", "error", err)
		} else {
			run.Env = append(run.Env, shm.EnvRegion+"="+regionPath)
		}
	}
	logw := newLineLogger(spec.Logger, spec.Name, spec.Instance)
	run.Stderr = logw
	setProcAttr(run)
	p, err := startProcess(run, ecallR, ecallW, ocallR, ocallW, logw, region, 0)
	if regionPath != "" {
		// The region lives as long as the mappings; the name only until
		// the image has opened it, which it does before its hello.
		if err != nil {
			os.Remove(regionPath)
		} else {
			go func() {
				<-p.done
				os.Remove(regionPath)
			}()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("enclave: gramine: %w", err)
	}
	return p, nil
}

// gramineRegion creates an instance's boundary region under GramineSHMDir.
func gramineRegion(spec LaunchSpec) (*shm.Region, string, error) {
	if err := os.MkdirAll(GramineSHMDir, 0o700); err != nil {
		return nil, "", err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, "", err
	}
	path := filepath.Join(GramineSHMDir, fmt.Sprintf("%s-%d-%x", safeName(spec.Name), spec.Instance, rnd))
	reg, err := shm.CreateFile(path, 0, 0)
	if err != nil {
		return nil, "", err
	}
	return reg, path, nil
}

// safeName keeps letters, digits, '-' and '_' of a deployment name for a
// file name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
