package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/provision"
)

// verifiedCoordinator is what 'cloister coordinator verify' checked, as
// client.Connect verified it: every field is bound by the coordinator's
// evidence, except the manifest version, which is the manifest's own when
// the client read it (it followed updates, or --min-manifest-version was
// given) and otherwise as the coordinator reports it.
type verifiedCoordinator struct {
	Verified        bool   `json:"verified"`
	ManifestHash    string `json:"manifest_hash"`
	ManifestVersion uint64 `json:"manifest_version"`
	// PinnedHash is the hash given; FollowedUpdates the owner-signed
	// updates followed from it to ManifestHash.
	PinnedHash      string `json:"pinned_hash"`
	FollowedUpdates int    `json:"followed_updates"`
	EvidenceType    string `json:"evidence_type"`
	Measurement     string `json:"measurement"`
	Signer          string `json:"mrsigner"`
	ProductID       uint16 `json:"product_id"`
	SVN             uint16 `json:"svn"`
	Debug           bool   `json:"debug"`
	TCBStatus       string `json:"tcb_status"`
	SigningKey      string `json:"signing_key"`
}

// newVerifiedCoordinator describes c, verified pinning the manifest hash
// pinned.
func newVerifiedCoordinator(c *client.Client, pinned [32]byte) verifiedCoordinator {
	cl := c.Claims()
	h := c.ManifestHash()
	v := verifiedCoordinator{
		Verified:        true,
		ManifestHash:    hex.EncodeToString(h[:]),
		ManifestVersion: c.ManifestVersion(),
		PinnedHash:      hex.EncodeToString(pinned[:]),
		FollowedUpdates: c.FollowedUpdates(),
		EvidenceType:    string(cl.Type),
		Measurement:     hex.EncodeToString(cl.MREnclave[:]),
		Signer:          hex.EncodeToString(cl.MRSigner[:]),
		ProductID:       cl.ProductID,
		SVN:             cl.SVN,
		Debug:           cl.Debug,
		TCBStatus:       cl.TCBStatus.String(),
		SigningKey:      hex.EncodeToString(c.SigningKey()),
	}
	if cl.Simulated() {
		v.EvidenceType = provision.EvidenceSimulated
		v.TCBStatus = "simulated (no TCB)"
	}
	return v
}

func (v verifiedCoordinator) print(w io.Writer) {
	fmt.Fprintf(w, "coordinator:  VERIFIED (evidence, report data, manifest hash and policy checked as the client SDK does)\n")
	if v.FollowedUpdates == 0 {
		fmt.Fprintf(w, "manifest:     %s (version %d; the pinned hash)\n", v.ManifestHash, v.ManifestVersion)
	} else {
		fmt.Fprintf(w, "manifest:     %s (version %d; followed %d signed update(s) from the pinned %s)\n", v.ManifestHash, v.ManifestVersion, v.FollowedUpdates, v.PinnedHash)
	}
	fmt.Fprintf(w, "measurement:  %s\n", v.Measurement)
	fmt.Fprintf(w, "signer:       %s (product %d, svn %d, debug %t)\n", v.Signer, v.ProductID, v.SVN, v.Debug)
	fmt.Fprintf(w, "evidence:     %s, TCB %s\n", v.EvidenceType, v.TCBStatus)
	fmt.Fprintf(w, "signing key:  %s\n", v.SigningKey)
	if v.EvidenceType == provision.EvidenceSimulated {
		fmt.Fprintf(w, "WARNING: simulated evidence promises nothing against a malicious host (accepted because --allow-simulation was given)\n")
	}
}

func coordinatorVerifyCommand() *cobra.Command {
	var (
		cf     clientFlags // the system to connect to
		tf     trustFlags  // what to verify it against
		asJSON bool
	)
	cmd := &cobra.Command{
		Use: "verify",
		Example: `  cloister coordinator verify --manifest manifest.yaml --allow-simulation
  cloister coordinator verify --manifest-hash 3f9a... --coordinator-measurement 7c41... --json
  cloister coordinator verify --manifest manifest-v1.yaml --min-manifest-version 3 --allow-simulation
  cloister coordinator verify --manifest manifest.yaml --policy coordinator-policy.json --collateral pcs/`,
		Short: "verify the coordinator as a client does: its evidence, the manifest hash it serves and its identity",
		Long: `Asks the coordinator for evidence bound to a fresh nonce and checks it
exactly as the client SDK (package client) does before it trusts a
coordinator: the evidence verifies (simulated evidence only with
--allow-simulation, or a --policy that allows it), it binds the
coordinator's signing key, the manifest hash and the nonce, the manifest
hash is the one pinned (--manifest-hash HASH, or --manifest FILE to pin
that file's hash) or a later one reached from it by the owner's signed
updates (each verified), and the coordinator's identity satisfies the
policy: --coordinator-measurement, a --policy file, or by default the
measurement of the coordinator image this cloister builds (--image,
--source). With --min-manifest-version N, a coordinator whose current
manifest is older than version N (a rolled-back one) is refused.

Prints what was verified. Exit status 3 when any check fails; the error
names the check.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return usagef("verify takes no arguments, got %q", args)
			}
			o, err := tf.options(ctx, env)
			if err != nil {
				return err
			}
			c, closeAll, err := dialVerified(ctx, env, &cf, o)
			if err != nil {
				return err
			}
			defer closeAll()
			v := newVerifiedCoordinator(c, o.ManifestHash)
			if asJSON {
				return printJSON(env.stdout, v)
			}
			v.print(env.stdout)
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.BoolVar(&asJSON, "json", false, "print what was verified as JSON")
	cf.register(fs)
	tf.register(fs, "")
	return cmd
}

// statusVerdict checks the coordinator's status against what its evidence
// proved (c, nil when not verified) and returns the line status prints.
func statusVerdict(st *provision.Status, c *client.Client) (string, error) {
	if c == nil {
		return "verified:     NO: this is what the coordinator says; give --manifest-hash or --manifest (or run 'cloister coordinator verify') to check it", nil
	}
	v := newVerifiedCoordinator(c, c.ManifestHash())
	if st.ManifestHash != v.ManifestHash {
		return "", &rejectedError{err: fmt.Errorf("the status names manifest %s, the verified evidence %s", st.ManifestHash, v.ManifestHash)}
	}
	if st.Measurement != v.Measurement {
		return "", &rejectedError{err: fmt.Errorf("the status names measurement %s, the verified evidence %s", st.Measurement, v.Measurement)}
	}
	return fmt.Sprintf("verified:     yes: the manifest hash and the measurement (%s evidence); epoch, joins and refusals are as the coordinator reports them", v.EvidenceType), nil
}
