package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/secure"
)

// manifestClientCommand is 'cloister manifest client NAME --key FILE': a new
// client credential, its private key written to FILE and its manifest entry
// printed.
func manifestClientCommand() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "client NAME",
		Short: "make a client credential: an Ed25519 key in FILE, and the manifest entry that names it",
		Long: `Writes a new Ed25519 private key (PEM, PKCS #8, mode 0600; an existing file is
never overwritten) to --key and prints the entry to add under the manifest's
clients: section. The client proves it in its sessions with trusted services:
'cloister request --secure --client NAME --client-key FILE ...'.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("want one client NAME, got %d arguments", len(args))}
			}
			if keyFile == "" {
				return &usageError{err: errors.New("--key FILE is required")}
			}
			name := args[0]
			if len(name) == 0 || len(name) > secure.MaxClientName {
				return &usageError{err: fmt.Errorf("client name of %d bytes (1 to %d)", len(name), secure.MaxClientName)}
			}
			priv, err := client.NewKeyFile(keyFile)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			pub := priv.Public().(ed25519.PublicKey)
			fmt.Fprintf(env.stdout, "clients:\n  %s: {public_key: %s}\n", name, base64.StdEncoding.EncodeToString(pub))
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&keyFile, "key", "", "write the private key to this `file` (required)")
	return cmd
}

// loadCredential reads the client credential NAME's private key from FILE
// (client.LoadKeyFile, as 'cloister manifest client' writes it).
func loadCredential(name, file string) (secure.Credential, error) {
	k, err := client.LoadKeyFile(file)
	if err != nil {
		return secure.Credential{}, err
	}
	return secure.Credential{Name: name, Key: k}, nil
}
