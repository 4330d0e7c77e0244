package enclave

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

// ToolkitModule is the module path of Cloister itself, whose packages
// (such as the coordinator's image) every application can build.
const ToolkitModule = "github.com/cloister-dev/cloister"

// Toolkit says which Cloister source a binary was built from, so that it
// can build Cloister's own images (the coordinator) outside a checkout.
type Toolkit struct {
	// Version is the module version this binary links ("(devel)" for a
	// development build from a checkout).
	Version string
	// Checkout is the local Cloister source of a development build (or of
	// a build whose go.mod replaces Cloister with a local directory);
	// empty when the binary links a published version.
	Checkout string
}

// develVersion is the version of a module in a binary built from its
// working tree.
const develVersion = "(devel)"

// ThisToolkit returns the Cloister source this binary was built from: the
// version of Cloister in its build information (as the main module or as a
// dependency) and, for a development build or a replace to a local
// directory, where that checkout is.
func ThisToolkit() Toolkit {
	tk := Toolkit{Version: develVersion}
	if info, ok := debug.ReadBuildInfo(); ok {
		mods := append([]*debug.Module{&info.Main}, info.Deps...)
		for _, m := range mods {
			if m == nil || m.Path != ToolkitModule {
				continue
			}
			if m.Version != "" {
				tk.Version = m.Version
			}
			if r := m.Replace; r != nil {
				if r.Version == "" && r.Path != "" { // a directory
					tk.Checkout = r.Path
				} else if r.Version != "" {
					tk.Version = r.Version
				}
			}
			break
		}
	}
	if tk.Checkout == "" && (tk.Version == develVersion || tk.Version == "") {
		tk.Checkout = sourceCheckout()
	}
	return tk
}

// Development reports whether this is a development build: Cloister's
// images come from a local checkout rather than a published version.
func (tk Toolkit) Development() bool { return tk.Checkout != "" }

// sourceCheckout finds the Cloister checkout a development build was
// compiled from, through the path this file was compiled at (builds
// without -trimpath record it); empty if it is not on this machine.
func sourceCheckout() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return ""
	}
	for d := filepath.Dir(file); ; d = filepath.Dir(d) {
		if modulePath(filepath.Join(d, "go.mod")) == ToolkitModule {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// modulePath returns the module path a go.mod declares, or "".
func modulePath(gomod string) string {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// mainModule returns the path of the main module go sees in dir, or ""
// outside any module.
func mainModule(ctx context.Context, gocmd, dir string) string {
	if gocmd == "" {
		gocmd = "go"
	}
	cmd := exec.CommandContext(ctx, gocmd, "env", "GOMOD")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return ""
	}
	return modulePath(gomod)
}

// BuildPackage builds the main package pkg into an image at out like
// Build, from where it lives: a package of the user's module (or a
// directory) from opts.Dir's module; a package of Cloister itself
// (ToolkitModule/..., such as the coordinator's image) from a Cloister
// checkout when opts.Dir is in one, and otherwise from a module of its own
// in the user cache directory that requires Cloister at this binary's
// version — or replaces it with the local checkout of a development build,
// which it says on notice (opts.Stderr when nil; both may be nil). So
// Cloister's images come out the same wherever the user's module is.
func BuildPackage(ctx context.Context, pkg, out string, opts BuildOptions, notice io.Writer) (*Image, error) {
	dir := opts.Dir
	if dir == "" {
		dir = "."
	}
	if !strings.HasPrefix(pkg, ToolkitModule+"/") || mainModule(ctx, opts.Go, dir) == ToolkitModule {
		return Build(ctx, pkg, out, opts)
	}
	tk := ThisToolkit()
	mod, err := tk.buildModule(ctx, opts.Go)
	if err != nil {
		return nil, err
	}
	if notice == nil {
		notice = opts.Stderr
	}
	if notice != nil && tk.Development() {
		fmt.Fprintf(notice, "cloister: building %s from the local checkout %s (a development build; a replace directive in %s)\n", pkg, tk.Checkout, filepath.Join(mod, "go.mod"))
	}
	opts.Dir = mod
	opts.Env = append(opts.Env, "GOFLAGS=-mod=mod")
	img, err := Build(ctx, pkg, out, opts)
	if err != nil {
		return nil, fmt.Errorf("enclave: build %s from cloister %s (module %s): %w", pkg, tk.Version, mod, err)
	}
	return img, nil
}

// ErrNoToolkit is wrapped when a development build cannot find the
// checkout it was built from, so Cloister's own images cannot be built.
var ErrNoToolkit = errors.New("enclave: this cloister is a development build and its checkout is not on this machine: install a published version (go install github.com/cloister-dev/cloister/cmd/cloister@latest) or build from the checkout")

// buildModule writes (once) a module that requires Cloister at tk's
// version, or replaces it with tk's checkout, and returns its directory.
func (tk Toolkit) buildModule(ctx context.Context, gocmd string) (string, error) {
	if tk.Version == develVersion && tk.Checkout == "" {
		return "", ErrNoToolkit
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	var gomod bytes.Buffer
	fmt.Fprintf(&gomod, "// Written by cloister to build Cloister's own enclave images.\nmodule cloister.local/images\n\ngo %s\n\n", GoLanguageVersion(ctx, gocmd))
	if tk.Checkout != "" {
		fmt.Fprintf(&gomod, "require %s v0.0.0-00010101000000-000000000000\n\nreplace %s => %s\n", ToolkitModule, ToolkitModule, tk.Checkout)
	} else {
		fmt.Fprintf(&gomod, "require %s %s\n", ToolkitModule, tk.Version)
	}
	sum := sha256.Sum256(gomod.Bytes())
	dir := filepath.Join(cache, "cloister", "toolkit-build", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("enclave: toolkit build module: %w", err)
	}
	// Atomically: another cloister may be building here now.
	if err := writeFileAtomic(filepath.Join(dir, "go.mod"), gomod.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("enclave: toolkit build module: %w", err)
	}
	// The checkout's go.sum covers Cloister's dependencies: no download
	// needed for what the checkout already built.
	if tk.Checkout != "" {
		if b, err := os.ReadFile(filepath.Join(tk.Checkout, "go.sum")); err == nil {
			if err := writeFileAtomic(filepath.Join(dir, "go.sum"), b, 0o644); err != nil {
				return "", fmt.Errorf("enclave: toolkit build module: %w", err)
			}
		}
	}
	return dir, nil
}

// GoLanguageVersion returns the go directive for a new go.mod: the
// toolchain's own version (go env GOVERSION without the "go" and any
// suffix; gocmd "" is go from PATH).
func GoLanguageVersion(ctx context.Context, gocmd string) string {
	if gocmd == "" {
		gocmd = "go"
	}
	v := strings.TrimPrefix(runtime.Version(), "go")
	if out, err := exec.CommandContext(ctx, gocmd, "env", "GOVERSION").Output(); err == nil {
		v = strings.TrimPrefix(strings.TrimSpace(string(out)), "go")
	}
	if i := strings.IndexAny(v, " -+"); i >= 0 {
		v = v[:i]
	}
	if v == "" || strings.HasPrefix(v, "devel") {
		return "1.26"
	}
	return v
}
