package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

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
			pub, priv, err := ed25519.GenerateKey(nil)
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKCS8PrivateKey(priv)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
				f.Close()
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			fmt.Fprintf(env.stdout, "clients:\n  %s: {public_key: %s}\n", name, base64.StdEncoding.EncodeToString(pub))
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&keyFile, "key", "", "write the private key to this `file` (required)")
	return cmd
}

// loadCredential reads the client credential NAME's private key from FILE
// (PEM, PKCS #8 Ed25519, as 'cloister manifest client' writes it).
func loadCredential(name, file string) (secure.Credential, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return secure.Credential{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return secure.Credential{}, fmt.Errorf("%s: want a PEM \"PRIVATE KEY\" block", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return secure.Credential{}, fmt.Errorf("%s: %w", file, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return secure.Credential{}, fmt.Errorf("%s: a %T key, want Ed25519", file, k)
	}
	return secure.Credential{Name: name, Key: priv}, nil
}
