package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"fmt"
	"strings"

	"github.com/cloister-dev/cloister/manifest"
)

func manifestCommand() *command {
	return &command{
		name:        "manifest",
		summary:     "check an application manifest and print its canonical hash",
		subcommands: []*command{manifestCheckCommand(), manifestHashCommand()},
	}
}

// loadManifest parses FILE; an invalid manifest is a rejection (exit 3)
// after every error has been printed, one per line, on stderr.
func loadManifest(env *cliEnv, args []string) (*manifest.Manifest, error) {
	if len(args) != 1 {
		return nil, &usageError{err: fmt.Errorf("want one manifest FILE, got %d arguments", len(args))}
	}
	m, err := manifest.ParseFile(args[0])
	if err == nil {
		return m, nil
	}
	fe := manifest.FieldErrors(err)
	if len(fe) == 0 {
		return nil, err // could not read the file
	}
	for _, e := range fe {
		fmt.Fprintf(env.stderr, "%s: %v\n", args[0], e)
	}
	noun := "errors"
	if len(fe) == 1 {
		noun = "error"
	}
	return nil, &rejectedError{err: fmt.Errorf("%s: invalid manifest (%d %s)", args[0], len(fe), noun)}
}

func manifestCheckCommand() *command {
	return &command{
		name:    "check",
		args:    "FILE",
		summary: "validate a manifest: print OK and its hash, or every error with its field and line",
		help: `FILE is a manifest in YAML or JSON (see the manifest package documentation).
Every error is reported, each naming the field path and the line. Exit status
3 when the manifest is invalid.`,
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			m, err := loadManifest(env, args)
			if err != nil {
				return err
			}
			var trusted, regular []string
			for _, name := range m.ServiceNames() {
				if m.Services[name].Trusted() {
					trusted = append(trusted, name)
				} else {
					regular = append(regular, name)
				}
			}
			secured := 0
			for _, a := range m.Addresses {
				if a.Secured {
					secured++
				}
			}
			owner := "none (the manifest cannot be updated)"
			if m.Owner != nil {
				switch m.Owner.PublicKey.(type) {
				case ed25519.PublicKey:
					owner = "Ed25519"
				case *ecdsa.PublicKey:
					owner = "ECDSA P-256"
				}
			}
			tcb := make([]string, len(m.Policy.AcceptedTCB))
			for i, s := range m.Policy.AcceptedTCB {
				tcb[i] = string(s)
			}
			w := env.stdout
			fmt.Fprintf(w, "OK %s\n", args[0])
			fmt.Fprintf(w, "hash       %s\n", m.HashHex())
			fmt.Fprintf(w, "version    %d\n", m.Version)
			fmt.Fprintf(w, "services   %d trusted (%s), %d regular (%s)\n", len(trusted), strings.Join(trusted, ", "), len(regular), strings.Join(regular, ", "))
			fmt.Fprintf(w, "addresses  %d (%d secured)\n", len(m.Addresses), secured)
			fmt.Fprintf(w, "tcb        %s\n", strings.Join(tcb, ", "))
			fmt.Fprintf(w, "owner      %s\n", owner)
			if m.Policy.AllowSimulation {
				fmt.Fprintln(w, "WARNING: allow_simulation is true: simulated evidence promises nothing against a malicious host")
			}
			return nil
		},
	}
}

func manifestHashCommand() *command {
	return &command{
		name:    "hash",
		args:    "FILE",
		summary: "print the canonical hash of a manifest (what clients pin)",
		help: `Prints the SHA-256 of the manifest's canonical encoding in hex: independent
of YAML formatting, key order and comments. Exit status 3 when the manifest is
invalid.`,
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			m, err := loadManifest(env, args)
			if err != nil {
				return err
			}
			fmt.Fprintln(env.stdout, m.HashHex())
			return nil
		},
	}
}
