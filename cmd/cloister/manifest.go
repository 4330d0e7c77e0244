package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
)

func manifestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "check, hash and sign application manifests",
	}
	return group(cmd, manifestCheckCommand(), manifestHashCommand(), manifestSignCommand(), manifestVerifyUpdateCommand(), manifestClientCommand())
}

// loadManifest parses the one FILE in args; see parseManifestFile.
func loadManifest(env *cliEnv, args []string) (*manifest.Manifest, error) {
	if len(args) != 1 {
		return nil, &usageError{err: fmt.Errorf("want one manifest FILE, got %d arguments", len(args))}
	}
	return parseManifestFile(env, args[0])
}

// parseManifestFile parses FILE; an invalid manifest is a rejection (exit 3)
// after every error has been printed, one per line, on stderr.
func parseManifestFile(env *cliEnv, file string) (*manifest.Manifest, error) {
	m, err := manifestyaml.ParseFile(file)
	if err == nil {
		return m, nil
	}
	fe := manifest.FieldErrors(err)
	if len(fe) == 0 {
		return nil, err // could not read the file
	}
	for _, e := range fe {
		fmt.Fprintf(env.stderr, "%s: %v\n", file, e)
	}
	noun := "errors"
	if len(fe) == 1 {
		noun = "error"
	}
	return nil, &rejectedError{err: fmt.Errorf("%s: invalid manifest (%d %s)", file, len(fe), noun)}
}

func manifestCheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "validate a manifest: print OK and its hash, or every error with its field and line",
		Long: `FILE is a manifest in YAML or JSON (see the manifest package documentation).
Every error is reported, each naming the field path and the line. Exit status
3 when the manifest is invalid.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
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
		}),
	}
	return cmd
}

func manifestHashCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hash FILE",
		Short: "print the canonical hash of a manifest (what clients pin)",
		Long: `Prints the SHA-256 of the manifest's canonical encoding in hex: independent
of YAML formatting, key order and comments. Exit status 3 when the manifest is
invalid.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			m, err := loadManifest(env, args)
			if err != nil {
				return err
			}
			fmt.Fprintln(env.stdout, m.HashHex())
			return nil
		}),
	}
	return cmd
}

func manifestSignCommand() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "sign CURRENT NEXT",
		Short: "sign the update from manifest CURRENT to NEXT with the owner key (prints the signature in base64)",
		Long: `Signs "cloister manifest update v1" ‖ hash(CURRENT) ‖ hash(NEXT) with the
owner's private key (--key: PEM, PKCS #8 Ed25519 or ECDSA P-256, or SEC 1 EC),
which must match CURRENT's owner public key, and NEXT's version must be higher.
The signature is printed in base64; the coordinator accepts NEXT with it.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 2 {
				return &usageError{err: fmt.Errorf("want CURRENT and NEXT manifest files, got %d arguments", len(args))}
			}
			if keyFile == "" {
				return &usageError{err: fmt.Errorf("--key is required")}
			}
			signer, err := loadSigningKey("--key", keyFile)
			if err != nil {
				return err
			}
			cur, err := parseManifestFile(env, args[0])
			if err != nil {
				return err
			}
			next, err := parseManifestFile(env, args[1])
			if err != nil {
				return err
			}
			sig, err := manifest.SignUpdate(signer, cur, next)
			if err != nil {
				return err
			}
			// Refuse to print a signature the coordinator would reject.
			if err := cur.VerifyUpdate(next, sig); err != nil {
				return &rejectedError{err: fmt.Errorf("the update would be refused: %w", err)}
			}
			fmt.Fprintln(env.stdout, base64.StdEncoding.EncodeToString(sig))
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&keyFile, "key", "", "the owner's private key, a PEM `file`")
	return cmd
}

func manifestVerifyUpdateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify-update CURRENT NEXT SIGNATURE",
		Short: "check that NEXT is a signed update of CURRENT (signature in base64, or a file holding it)",
		Long: `Accepts NEXT as the successor of CURRENT only if its version is higher and
SIGNATURE is CURRENT's owner's signature over the update. Exit status 3 when
it is not.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 3 {
				return &usageError{err: fmt.Errorf("want CURRENT, NEXT and SIGNATURE, got %d arguments", len(args))}
			}
			cur, err := parseManifestFile(env, args[0])
			if err != nil {
				return err
			}
			next, err := parseManifestFile(env, args[1])
			if err != nil {
				return err
			}
			text := args[2]
			if b, err := os.ReadFile(text); err == nil {
				text = string(b)
			}
			sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
			if err != nil {
				return &usageError{err: fmt.Errorf("SIGNATURE: want base64 (or a file holding it): %v", err)}
			}
			if err := cur.VerifyUpdate(next, sig); err != nil {
				return &rejectedError{err: err}
			}
			fmt.Fprintf(env.stdout, "OK version %d -> %d, %s\n", cur.Version, next.Version, next.HashHex())
			return nil
		}),
	}
	return cmd
}
