package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
)

// coordinatorPackage is the coordinator's enclave image.
const coordinatorPackage = "github.com/cloister-dev/cloister/coordinator/image"

// imageFlags locate the coordinator image: given, or built on first use
// into the user's cache.
type imageFlags struct {
	image  string
	source string
}

func (f *imageFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.image, "image", "", "the coordinator enclave image `file` (default: built on first use into the user cache directory)")
	fs.StringVar(&f.source, "source", "", "a `dir` in a Cloister checkout to build the image from (default: the current directory when it is in one, else this cloister's own version)")
}

// load returns the coordinator image: --image, or the cached build for this
// cloister binary, built now if missing.
func (f *imageFlags) load(ctx context.Context, env *cliEnv) (*enclave.Image, error) {
	if f.image != "" {
		img, err := enclave.Load(f.image)
		if err != nil {
			return nil, fmt.Errorf("--image: %w", err)
		}
		return img, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return nil, fmt.Errorf("coordinator image: %w (give --image)", err)
	}
	dir = filepath.Join(dir, "cloister", "images")
	key, err := selfKey()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "coordinator-"+key+".img")
	if img, err := enclave.Load(path); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator image: %w", err)
	}
	fmt.Fprintf(env.stderr, "building the coordinator image into %s (once per cloister binary)\n", path)
	// Build beside the final path, then move the image and its metadata
	// into place, so a concurrent start never sees half an image.
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	if _, err := enclave.BuildPackage(ctx, coordinatorPackage, tmp, enclave.BuildOptions{Dir: f.source, Stderr: env.stderr}, nil); err != nil {
		return nil, fmt.Errorf("building the coordinator image (with Go installed; or give --image): %w", err)
	}
	if err := os.Rename(tmp+enclave.MetadataSuffix, path+enclave.MetadataSuffix); err != nil {
		return nil, fmt.Errorf("coordinator image: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("coordinator image: %w", err)
	}
	return enclave.Load(path)
}

// selfKey names the image cache entry after this binary's content: another
// cloister build may hold another coordinator.
func selfKey() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("coordinator image: %w", err)
	}
	fh, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("coordinator image: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("coordinator image: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

func coordinatorCommand() *cobra.Command {
	var (
		v                            nodeVerb
		imf                          imageFlags
		manifestFile, backend, state string
		collateral                   string
		simKeys                      []string
	)
	var cmd *cobra.Command
	cmd = &cobra.Command{
		Use:   "coordinator",
		Short: "run a node hosting the coordinator (provisioning service); see also status, verify, rotate, update, replicas, recover",
		Long: `Runs a Cloister node (the flags of 'cloister node') that also hosts the
coordinator: the trusted service that holds the manifest, attests itself
to clients and hands keys to the enclaves the manifest allows. Its image is
built on first use into the user cache directory (or given with --image)
and runs on the process backend by default (simulated evidence: it promises
nothing against a malicious host).

Its state (root secret, signing key, manifest, key epoch) is sealed in
--state DIR and survives restarts and rebuilds of cloister. The default is
the user's config directory, keyed by the node's --name:
$XDG_CONFIG_HOME/cloister/coordinator/NAME (~/.config/... on Linux;
NAME "default" without --name); the place is printed at start. Delete it,
or give another --state, to start a fresh coordinator: new keys, no
manifest. A coordinator image with another measurement cannot open the
state (it is sealed to the image) and refuses to start rather than start
afresh.

With --manifest, the manifest is set once the coordinator serves, if it has
none yet; a coordinator that has one keeps it (updates must be signed by
the owner: 'cloister coordinator update').`,
		Args: cobra.ArbitraryArgs,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			var m *manifest.Manifest
			var raw []byte
			if manifestFile != "" {
				var err error
				if raw, err = os.ReadFile(manifestFile); err != nil {
					return fmt.Errorf("--manifest: %w", err)
				}
				if m, err = manifestyaml.Parse(raw); err != nil {
					return &rejectedError{err: fmt.Errorf("%s: %w", manifestFile, err)}
				}
			}
			logger, _, err := v.logs.logger(env.stderr)
			if err != nil {
				return err
			}
			img, err := imf.load(ctx, v.logs.stderrFor(env, logger.With("component", "image-build")))
			if err != nil {
				return err
			}
			announce(env.stderr, logger, v.logs.json(), fmt.Sprintf("coordinator image %s, measurement %s", img.Path, img.Measurement),
				"cloister coordinator: image", "image", img.Path, "measurement", img.Measurement.String())
			root, err := simulationRoot()
			if err != nil {
				return err
			}
			initConfig, err := coordinatorConfig(collateral, root, simKeys)
			if err != nil {
				return err
			}
			if state == "" {
				if state, err = defaultCoordinatorState(v.name); err != nil {
					return err
				}
			}
			announce(env.stderr, logger, v.logs.json(), "coordinator state: "+state,
				"cloister coordinator: state", "state", state)
			v.enclaves.extra = []node.EnclaveConfig{{Name: "coordinator", Image: img.Path, Backend: backend, StateDir: state, InitConfig: initConfig}}
			v.coordinator = true
			// The manifest is set as soon as the coordinator serves, before
			// the node's other enclaves start (and join).
			v.enclaves.afterExtra = func(ctx context.Context, b *bus.Bus) error {
				return coordinatorReady(ctx, b, logger, m, raw)
			}
			return v.run(ctx, env, nil)
		}),
	}
	fs := cmd.Flags()
	v.register(fs)
	imf.register(fs)
	fs.StringVar(&manifestFile, "manifest", "", "set this manifest `file` at start if the coordinator has none")
	fs.StringVar(&backend, "backend", node.BackendProcess, "enclave backend of the coordinator: process or gramine")
	fs.StringVar(&state, "state", "", "keep the coordinator's sealed state in `dir` (default: the user config directory's cloister/coordinator/NAME, NAME the --name or \"default\")")
	aliasFlags(fs, map[string]string{"state-dir": "state"})
	fs.StringVar(&collateral, "collateral", "", "an SGX DCAP collateral bundle `file` (JSON) to verify DCAP evidence down to its TCB status")
	fs.StringArrayVar(&simKeys, "sim-platform-key", nil, "trust another machine's simulation platform key `file` too (PEM; repeatable)")
	cmd.AddCommand(coordinatorStatusCommand(), coordinatorVerifyCommand(), coordinatorRotateCommand(), coordinatorUpdateCommand(),
		coordinatorReplicasCommand(), coordinatorRecoverCommand())
	return cmd
}

// defaultCoordinatorState is where a coordinator keeps its sealed state
// unless --state says otherwise: os.UserConfigDir()/cloister/coordinator/
// NAME, beside the simulation keys its state depends on, keyed by the node
// name (not by the cloister binary, so that a rebuild finds it again).
func defaultCoordinatorState(nodeName string) (string, error) {
	name := nodeName
	if name == "" {
		name = "default"
	}
	if !filepath.IsLocal(name) || strings.ContainsAny(name, `/\`) {
		return "", usagef("--name %q: not usable as a directory name for the coordinator's state (give --state DIR)", nodeName)
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("the coordinator's state directory (give --state DIR): %w", err)
	}
	return filepath.Join(dir, "cloister", "coordinator", name), nil
}

// coordinatorConfig builds the coordinator's Init configuration: the
// collateral file, and the simulation platform keys to trust (this
// machine's, root, and those of the simKeys files).
func coordinatorConfig(collateral string, root *attest.SimulationRoot, simKeys []string) ([]byte, error) {
	var c coordinator.Config
	if err := c.TrustSimulationRoot(root); err != nil {
		return nil, err
	}
	if collateral != "" {
		b, err := os.ReadFile(collateral)
		if err != nil {
			return nil, fmt.Errorf("--collateral: %w", err)
		}
		if _, err := attest.ParseCollateralBundle(b); err != nil {
			return nil, &usageError{err: fmt.Errorf("--collateral %s: %w", collateral, err)}
		}
		c.Collateral = b
	}
	for _, f := range simKeys {
		k, err := attest.LoadSimPlatformPublicKey(f)
		if err != nil {
			return nil, &usageError{err: fmt.Errorf("--sim-platform-key: %w", err)}
		}
		p, err := coordinator.EncodeSimPlatformKey(k)
		if err != nil {
			return nil, err
		}
		c.SimPlatformKeys = append(c.SimPlatformKeys, p)
	}
	return json.Marshal(c)
}

// coordinatorReady sets the manifest if the coordinator has none, and
// reports its state.
func coordinatorReady(ctx context.Context, b *bus.Bus, logger *slog.Logger, m *manifest.Manifest, raw []byte) error {
	st, err := coordinatorStatus(ctx, b)
	if err != nil {
		return fmt.Errorf("the coordinator does not answer: %w", err)
	}
	if m != nil {
		switch {
		case !st.ManifestSet:
			body, err := provision.Encode(provision.ManifestSet{Manifest: m.Canonical()})
			if err != nil {
				return err
			}
			if _, err := b.Request(ctx, provision.AddressManifestSet, body, bus.Timeout(30*time.Second)); err != nil {
				return fmt.Errorf("setting the manifest: %w", err)
			}
			logger.Info("cloister coordinator: manifest set", "hash", m.HashHex(), "version", m.Version)
		case st.ManifestHash == m.HashHex():
			logger.Info("cloister coordinator: the manifest was already set", "hash", st.ManifestHash)
		default:
			logger.Warn("cloister coordinator: the coordinator keeps the manifest it has; --manifest ignored (send a signed update)",
				"current", st.ManifestHash, "current_version", st.ManifestVersion, "given", m.HashHex(), "given_version", m.Version)
		}
		if st, err = coordinatorStatus(ctx, b); err != nil {
			return err
		}
	}
	logger.Info("cloister coordinator: ready", "manifest", st.ManifestHash, "version", st.ManifestVersion, "epoch", st.Epoch, "measurement", st.Measurement)
	return nil
}

// coordinatorStatus asks the coordinator for its status.
func coordinatorStatus(ctx context.Context, b *bus.Bus) (*provision.Status, error) {
	return client.CoordinatorStatus(ctx, b, 15*time.Second)
}

// askCoordinator sends req (encoded, unless nil) to one of the
// coordinator's addresses and decodes the status it answers with.
func askCoordinator(ctx context.Context, b *bus.Bus, address string, req any, timeout time.Duration) (*provision.Status, error) {
	var body []byte
	if req != nil {
		var err error
		if body, err = provision.Encode(req); err != nil {
			return nil, err
		}
	}
	m, err := b.Request(ctx, address, body, bus.Timeout(timeout))
	if err != nil {
		return nil, err
	}
	var st provision.Status
	if err := provision.Decode(m.Body(), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// currentManifest returns the coordinator's status and the hash of the
// manifest it holds; notSet explains what to do when it holds none.
func currentManifest(ctx context.Context, b *bus.Bus, notSet string) (*provision.Status, [32]byte, error) {
	st, err := coordinatorStatus(ctx, b)
	if err != nil {
		return nil, [32]byte{}, err
	}
	if !st.ManifestSet {
		return nil, [32]byte{}, errors.New(notSet)
	}
	hash, err := manifest.ParseHash(st.ManifestHash)
	return st, hash, err
}

func coordinatorStatusCommand() *cobra.Command {
	var cf clientFlags
	var tf trustFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "print the coordinator's status (manifest, epoch, joins, refusals) and whether it was verified",
		Long: `Prints the coordinator's status as it reports it: the manifest it holds,
the key epoch, joins granted and refused, its measurement and the kind of
its evidence. That answer is not attested: the last line says whether it
was verified. With --manifest-hash or --manifest (and the other flags of
'cloister coordinator verify'), the coordinator is verified first, as a
client verifies it, and the manifest hash and measurement of the status
must be the verified ones (exit status 3 otherwise).`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("status takes no arguments, got %q", args)}
			}
			var o client.Options
			if tf.given() {
				var err error
				if o, err = tf.options(ctx, env); err != nil {
					return err
				}
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			var verified *client.Client
			if tf.given() {
				if verified, err = connectVerified(ctx, b, o); err != nil {
					return err
				}
			}
			st, err := coordinatorStatus(ctx, b)
			if err != nil {
				return err
			}
			verdict, err := statusVerdict(st, verified)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.stdout, struct {
					*provision.Status
					Verified bool `json:"verified"`
				}{st, verified != nil})
			}
			printStatus(env.stdout, st)
			fmt.Fprintln(env.stdout, verdict)
			return nil
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	tf.register(fs, "verify first: ")
	fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(w io.Writer, st *provision.Status) {
	if st.ManifestSet {
		fmt.Fprintf(w, "manifest:     %s (version %d)\n", st.ManifestHash, st.ManifestVersion)
	} else {
		fmt.Fprintf(w, "manifest:     none set\n")
	}
	fmt.Fprintf(w, "key epoch:    %d", st.Epoch)
	if !st.GraceUntil.IsZero() {
		fmt.Fprintf(w, " (epoch %d valid until %s)", st.Epoch-1, st.GraceUntil.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "\njoins:        %d granted, %d refused\n", st.Joins, st.Refusals)
	ev := st.EvidenceType
	if ev == "" {
		ev = "not produced yet"
	}
	fmt.Fprintf(w, "measurement:  %s\nevidence:     %s\n", st.Measurement, ev)
	if st.EvidenceType == provision.EvidenceSimulated {
		fmt.Fprintf(w, "WARNING: simulated evidence promises nothing against a malicious host\n")
	}
}

// ownerSign signs msg as the manifest owner does: Ed25519 over msg, ECDSA
// P-256 over SHA-256(msg) (ASN.1), as manifest.Owner.Verify checks.
func ownerSign(keyFile string, msg []byte) ([]byte, error) {
	signer, err := loadSigningKey("--owner-key", keyFile)
	if err != nil {
		return nil, err
	}
	return application.SignAsOwner(signer, msg)
}

// loadSigningKey reads the manifest owner's private key file given with
// flag (manifest.ParseSigningKey); errors name the flag.
func loadSigningKey(flag, file string) (crypto.Signer, error) {
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	signer, err := manifest.ParseSigningKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, file, err)
	}
	return signer, nil
}

// ownerChange sends a change the owner signed (req) to the coordinator's
// address and prints the status it answers with.
func ownerChange(ctx context.Context, env *cliEnv, b *bus.Bus, address string, req any) error {
	after, err := askCoordinator(ctx, b, address, req, 30*time.Second)
	if err != nil {
		return err
	}
	printStatus(env.stdout, after)
	return nil
}

func coordinatorRotateCommand() *cobra.Command {
	var cf clientFlags
	var keyFile string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "start a new key epoch (signed with the owner key); the old one stays valid for --grace",
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("rotate takes no arguments, got %q", args)}
			}
			if keyFile == "" {
				return &usageError{err: errors.New("--owner-key is required")}
			}
			if grace < 0 || grace > coordinator.MaxGrace {
				return &usageError{err: fmt.Errorf("--grace must be between 0 and %v", coordinator.MaxGrace)}
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			st, hash, err := currentManifest(ctx, b, "the coordinator has no manifest yet")
			if err != nil {
				return err
			}
			g := grace.String()
			sig, err := ownerSign(keyFile, provision.RotateMessage(hash[:], st.Epoch+1, g))
			if err != nil {
				return err
			}
			return ownerChange(ctx, env, b, provision.AddressRotate,
				provision.RotateRequest{NextEpoch: st.Epoch + 1, Grace: g, Signature: sig})
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&keyFile, "owner-key", "", "the manifest owner's private key, a PEM `file` (required)")
	durationVar(fs, &grace, "grace", coordinator.DefaultGrace, "how long the previous epoch's keys stay valid")
	return cmd
}

func coordinatorUpdateCommand() *cobra.Command {
	var cf clientFlags
	var keyFile string
	cmd := &cobra.Command{
		Use:   "update NEXT",
		Short: "replace the coordinator's manifest with NEXT (higher version), signed with the owner key",
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("want the NEXT manifest file, got %d arguments", len(args))}
			}
			if keyFile == "" {
				return &usageError{err: errors.New("--owner-key is required")}
			}
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("NEXT: %w", err)
			}
			next, err := manifestyaml.Parse(raw)
			if err != nil {
				return &rejectedError{err: fmt.Errorf("%s: %w", args[0], err)}
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			_, cur, err := currentManifest(ctx, b, "the coordinator has no manifest yet: start it with --manifest")
			if err != nil {
				return err
			}
			sig, err := ownerSign(keyFile, manifest.UpdateMessage(cur, next.Hash()))
			if err != nil {
				return err
			}
			return ownerChange(ctx, env, b, provision.AddressManifestUpdate,
				provision.ManifestUpdate{Manifest: next.Canonical(), Signature: sig})
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&keyFile, "owner-key", "", "the current manifest owner's private key, a PEM `file` (required)")
	return cmd
}
