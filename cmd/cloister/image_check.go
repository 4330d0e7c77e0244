package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// trustedRuntime is the package every enclave image runs on: it speaks the
// boundary protocol with its host and gives the handlers their sealed
// storage, keys and evidence.
const trustedRuntime = leancheck.Module + "/trusted"

// checkTrustedImage refuses a package that cannot be an enclave image
// before anything is built: go list (run in dir, as go build will be) must
// name one main package that links the trusted runtime and none of the
// host side's packages (bus, cluster, node, enclave, NATS, net/http).
func checkTrustedImage(ctx context.Context, dir, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "list", "-f", "{{.ImportPath}}\t{{.Name}}\t{{join .Deps \" \"}}", pkg)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return fmt.Errorf("enclave build: PKG %s: %s", pkg, msg)
		}
		return fmt.Errorf("enclave build: PKG %s: go list: %w", pkg, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 {
		return usagef("enclave build: PKG %s names %d packages; give one main package", pkg, len(lines))
	}
	fields := strings.SplitN(lines[0], "\t", 3)
	if len(fields) != 3 {
		return fmt.Errorf("enclave build: PKG %s: unexpected go list output %q", pkg, lines[0])
	}
	path, name, deps := fields[0], fields[1], strings.Fields(fields[2])
	var why error
	switch {
	case name != "main":
		why = fmt.Errorf("it is package %s, not a main package (an image is a program whose main runs the trusted runtime)", name)
	case !slices.Contains(deps, trustedRuntime):
		why = fmt.Errorf("it does not link the trusted runtime %s (an image's main hands its handlers to trusted.New(...).Run)", trustedRuntime)
	default:
		var host []string
		for _, d := range deps {
			if leancheck.IsHostOnly(d) {
				host = append(host, d)
			}
		}
		switch {
		case len(host) > 3:
			why = fmt.Errorf("it links host-side packages an enclave must not contain: %s and %d more", strings.Join(host[:3], ", "), len(host)-3)
		case len(host) > 0:
			why = fmt.Errorf("it links host-side packages an enclave must not contain: %s", strings.Join(host, ", "))
		}
	}
	if why != nil {
		return usagef("enclave build: PKG %s (%s) is not a trusted image: %w", pkg, path, why)
	}
	return nil
}
