package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
)

// version is set at link time with -ldflags "-X main.version=v1.2.3"; when
// empty, the module version from the build info is used.
var version = ""

// versionReport is what 'cloister version' prints: which code this is and
// which wire and storage formats it speaks. A host and an enclave image
// must agree on the boundary protocol; a client and a trusted service on
// the client-session protocol.
type versionReport struct {
	Version   string `json:"version"`             // module version, or "(devel)"
	Module    string `json:"module"`              // main module path
	Revision  string `json:"revision,omitempty"`  // VCS revision of a build from a checkout
	Time      string `json:"vcs_time,omitempty"`  // commit time of that revision
	Modified  bool   `json:"modified,omitempty"`  // the checkout had uncommitted changes
	Go        string `json:"go"`                  // toolchain that built this binary
	Platform  string `json:"platform"`            // GOOS/GOARCH
	Boundary  uint16 `json:"boundary_protocol"`   // boundary.ProtocolVersion
	Sessions  int    `json:"client_session"`      // secure.SessionVersion
	Envelopes int    `json:"secured_envelope"`    // secure.Version
	SealBlobs int    `json:"seal_format"`         // seal.Version
	Store     int    `json:"store_format"`        // trusted.StoreFormat
	LinkTime  bool   `json:"link_time,omitempty"` // Version was set with -ldflags -X main.version
}

// newVersionReport describes this binary from its build information (nil
// when the binary carries none) and the link-time version (may be empty).
func newVersionReport(info *debug.BuildInfo, linked string) versionReport {
	r := versionReport{
		Version:   "(devel)",
		Module:    "github.com/cloister-dev/cloister",
		Go:        runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
		Boundary:  boundary.ProtocolVersion,
		Sessions:  secure.SessionVersion,
		Envelopes: secure.Version,
		SealBlobs: seal.Version,
		Store:     trusted.StoreFormat,
	}
	if info != nil {
		if info.Main.Path != "" {
			r.Module = info.Main.Path
		}
		if info.Main.Version != "" {
			r.Version = info.Main.Version
		}
		if info.GoVersion != "" {
			r.Go = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				r.Revision = s.Value
			case "vcs.time":
				r.Time = s.Value
			case "vcs.modified":
				r.Modified = s.Value == "true"
			}
		}
	}
	if linked != "" {
		r.Version, r.LinkTime = linked, true
	}
	return r
}

// text is the human-readable report.
func (r versionReport) text() string {
	v := r.Version
	if r.Revision != "" {
		v += " " + r.Revision
		if r.Modified {
			v += " (modified)"
		}
	}
	return fmt.Sprintf(`cloister %s
module             %s
built with         %s %s
boundary protocol  %d
client sessions    %d
secured envelopes  %d
sealed blobs       %d
protected storage  %d
`, v, r.Module, r.Go, r.Platform, r.Boundary, r.Sessions, r.Envelopes, r.SealBlobs, r.Store)
}

func versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "print the version of cloister and of the protocols and formats it speaks",
		Long: `Prints the module version (or "(devel)" with the VCS revision, and
"(modified)" when built from a checkout with uncommitted changes), the Go
toolchain, and the versions of the boundary protocol (a host and its
enclave images must agree on it), the client-session protocol, secured
envelopes and sealed blobs.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("version takes no arguments, got %q", args)}
			}
			info, _ := debug.ReadBuildInfo()
			r := newVersionReport(info, version)
			if asJSON {
				return printJSON(env.stdout, r)
			}
			fmt.Fprint(env.stdout, r.text())
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
