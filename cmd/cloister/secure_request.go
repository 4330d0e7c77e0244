package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/manifest"
)

// trustFlags say which coordinator a client trusts, as package client
// checks it: the manifest hash to pin, the coordinator's identity (its
// image's measurement, or an attestation policy) and whether simulated
// evidence is accepted. 'cloister request --secure' and 'cloister
// coordinator verify' and 'status' share them; the verification itself is
// client.Connect's.
type trustFlags struct {
	manifestHash    string
	manifestFile    string
	minVersion      uint64
	allowSimulation bool
	measurements    []string
	simKeys         []string
	policyFile      string
	collateral      string
	img             imageFlags
}

// register declares the flags on fs; when is the condition the help
// prints before each (e.g. "with --secure: "), or "".
func (f *trustFlags) register(fs *pflag.FlagSet, when string) {
	fs.StringVar(&f.manifestHash, "manifest-hash", "", when+"the manifest `hash` to pin (cloister manifest hash FILE)")
	fs.StringVar(&f.manifestFile, "manifest", "", when+"pin the hash of this manifest `file` (instead of --manifest-hash)")
	fs.Uint64Var(&f.minVersion, "min-manifest-version", 0, when+"refuse a coordinator whose current manifest has a version below `N` (as one whose state was rolled back would); the version is read from the manifest itself")
	fs.BoolVar(&f.allowSimulation, "allow-simulation", false, when+"accept a coordinator with simulated evidence (promises nothing against a malicious host)")
	fs.StringArrayVar(&f.simKeys, "sim-platform-key", nil, when+"with --allow-simulation, trust this simulation platform key `file` (PEM) instead of this machine's; repeatable")
	fs.StringArrayVar(&f.measurements, "coordinator-measurement", nil, when+"an accepted coordinator image `measurement` (hex; repeatable; default: the image this cloister builds)")
	fs.StringVar(&f.policyFile, "policy", "", when+"the coordinator's evidence must satisfy this attestation policy JSON `file` (as 'cloister attest verify --policy'; with --coordinator-measurement, either identity is accepted)")
	fs.StringVar(&f.collateral, "collateral", "", when+"SGX DCAP collateral (a JSON bundle `file` or a directory of PCS files) to verify DCAP evidence down to its TCB status")
	f.img.register(fs)
}

// given reports whether any flag asks for verification.
func (f *trustFlags) given() bool {
	return f.manifestHash != "" || f.manifestFile != ""
}

// options checks the flags and returns the client options that verify
// the coordinator: the pinned manifest hash and the coordinator policy.
func (f *trustFlags) options(ctx context.Context, env *cliEnv) (client.Options, error) {
	var o client.Options
	switch {
	case f.manifestHash != "" && f.manifestFile != "":
		return o, usagef("give --manifest-hash or --manifest, not both")
	case f.manifestFile != "":
		m, err := parseManifestFile(env, f.manifestFile)
		if err != nil {
			return o, fmt.Errorf("--manifest: %w", err)
		}
		o.ManifestHash = m.Hash()
	case f.manifestHash != "":
		h, err := manifest.ParseHash(f.manifestHash)
		if err != nil {
			return o, usagef("--manifest-hash: %w", err)
		}
		o.ManifestHash = h
	default:
		return o, usagef("the manifest to pin is missing: give --manifest-hash HASH or --manifest FILE")
	}
	o.MinManifestVersion = f.minVersion
	if f.policyFile != "" {
		b, err := os.ReadFile(f.policyFile)
		if err != nil {
			return o, fmt.Errorf("--policy: %w", err)
		}
		pol, err := attest.ParsePolicy(b)
		if err != nil {
			return o, usagef("--policy %s: %w", f.policyFile, err)
		}
		o.CoordinatorPolicy = *pol
	}
	// Simulated evidence only when asked: by the flag, or by the policy
	// file the user wrote.
	o.AllowSimulation = f.allowSimulation || o.CoordinatorPolicy.AllowSimulation
	for _, p := range f.simKeys {
		k, err := attest.LoadSimPlatformPublicKey(p)
		if err != nil {
			return o, usagef("--sim-platform-key: %w", err)
		}
		o.SimPlatformKeys = append(o.SimPlatformKeys, k)
	}
	if o.AllowSimulation && len(o.SimPlatformKeys) == 0 {
		path, err := simPlatformKeyPath("")
		if err != nil {
			return o, err
		}
		k, err := attest.LoadSimPlatformPublicKey(path)
		if err != nil {
			return o, fmt.Errorf("this machine's simulation platform key (or give --sim-platform-key): %w", err)
		}
		o.SimPlatformKeys = []*ecdsa.PublicKey{k}
	}
	if f.collateral != "" {
		c, err := attest.LoadCollateral(f.collateral)
		if err != nil {
			return o, fmt.Errorf("--collateral: %w", err)
		}
		o.Collateral = c
	}
	for _, m := range f.measurements {
		v, err := enclave.ParseMeasurement(m)
		if err != nil {
			return o, usagef("--coordinator-measurement: %w", err)
		}
		o.CoordinatorPolicy.MREnclaves = append(o.CoordinatorPolicy.MREnclaves, v)
	}
	if len(o.CoordinatorPolicy.MREnclaves) == 0 && o.CoordinatorPolicy.MRSigner == nil {
		img, err := f.img.load(ctx, env)
		if err != nil {
			return o, fmt.Errorf("the coordinator's measurement (give --coordinator-measurement or --policy): %w", err)
		}
		o.CoordinatorPolicy.MREnclaves = [][32]byte{img.Measurement}
	}
	o.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return o, nil
}

// connectVerified verifies the coordinator on b with o (client.Connect);
// a coordinator that fails verification is a rejection (exit code 3).
func connectVerified(ctx context.Context, b *bus.Bus, o client.Options) (*client.Client, error) {
	c, err := client.Connect(ctx, b, o)
	if errors.Is(err, client.ErrUntrusted) {
		return nil, &rejectedError{err: err}
	}
	return c, err
}

// dialVerified connects to the system (cf) and verifies its coordinator
// with o; closeAll leaves the system.
func dialVerified(ctx context.Context, env *cliEnv, cf *clientFlags, o client.Options) (c *client.Client, closeAll func(), err error) {
	b, closeAll, err := cf.connect(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	if c, err = connectVerified(ctx, b, o); err != nil {
		closeAll()
		return nil, nil, err
	}
	return c, closeAll, nil
}

// secureFlags are the flags of 'cloister request --secure': the request is
// sealed to a trusted service's attested key (package client).
type secureFlags struct {
	trustFlags
	secure     bool
	service    string
	clientName string
	clientKey  string
}

func (f *secureFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.secure, "secure", false, "seal the request to --service's attested key and open its reply (needs --manifest-hash or --manifest)")
	fs.StringVar(&f.service, "service", "", "with --secure: the trusted service `name` the request is for")
	fs.StringVar(&f.clientName, "client", "", "with --secure: the client `name` the manifest lists (the session proves its credential)")
	fs.StringVar(&f.clientKey, "client-key", "", "with --secure: the client's private key `file` ('cloister manifest client' writes one)")
	f.trustFlags.register(fs, "with --secure: ")
}

// options checks the flags and returns the client options.
func (f *secureFlags) options(ctx context.Context, env *cliEnv) (client.Options, error) {
	if f.service == "" || !f.given() || f.clientName == "" || f.clientKey == "" {
		return client.Options{}, usagef("--secure needs --service, --manifest-hash (or --manifest), --client and --client-key")
	}
	cred, err := loadCredential(f.clientName, f.clientKey)
	if err != nil {
		return client.Options{}, usagef("--client-key: %w", err)
	}
	o, err := f.trustFlags.options(ctx, env)
	o.Credential = cred
	return o, err
}

// request seals body to the service, sends it to address through the
// verified client c and returns the opened reply.
func (f *secureFlags) request(ctx context.Context, c *client.Client, address string, body []byte, opts []bus.DeliveryOption) ([]byte, error) {
	out, err := c.Request(ctx, address, f.service, body, opts...)
	if errors.Is(err, client.ErrBadSignature) || errors.Is(err, client.ErrManifestMismatch) {
		return nil, &rejectedError{err: err}
	}
	return out, err
}

// secureRequest is 'cloister request --secure': it prints the opened reply.
func secureRequest(ctx context.Context, env *cliEnv, cf *clientFlags, sf *secureFlags, address string, body []byte, opts []bus.DeliveryOption) error {
	o, err := sf.options(ctx, env)
	if err != nil {
		return err
	}
	c, closeAll, err := dialVerified(ctx, env, cf, o)
	if err != nil {
		return err
	}
	defer closeAll()
	out, err := sf.request(ctx, c, address, body, opts)
	if err != nil {
		return err
	}
	writeBody(env.stdout, out)
	return nil
}
