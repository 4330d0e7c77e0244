package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/manifest"
)

// secureFlags are the flags of 'cloister request --secure': the request is
// sealed to a trusted service's attested key (package client).
type secureFlags struct {
	secure          bool
	service         string
	manifestHash    string
	allowSimulation bool
	measurements    stringList
	simKeys         stringList
	clientName      string
	clientKey       string
	img             imageFlags
}

func (f *secureFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.secure, "secure", false, "seal the request to --service's attested key and open its reply (needs --manifest-hash)")
	fs.StringVar(&f.service, "service", "", "with --secure: the trusted service `name` the request is for")
	fs.StringVar(&f.manifestHash, "manifest-hash", "", "with --secure: the manifest `hash` to pin (cloister manifest hash FILE)")
	fs.BoolVar(&f.allowSimulation, "allow-simulation", false, "with --secure: accept a coordinator with simulated evidence (promises nothing against a malicious host)")
	fs.Var(&f.simKeys, "sim-platform-key", "with --secure and --allow-simulation: trust this simulation platform key `file` (PEM) instead of this machine's; repeatable")
	fs.StringVar(&f.clientName, "client", "", "with --secure: the client `name` the manifest lists (the session proves its credential)")
	fs.StringVar(&f.clientKey, "client-key", "", "with --secure: the client's private key `file` ('cloister manifest client' writes one)")
	fs.Var(&f.measurements, "coordinator-measurement", "with --secure: an accepted coordinator image `measurement` (hex; repeatable; default: the image this cloister builds)")
}

// options checks the flags and returns the client options.
func (f *secureFlags) options(ctx context.Context, env *cliEnv) (client.Options, error) {
	var o client.Options
	if f.service == "" || f.manifestHash == "" || f.clientName == "" || f.clientKey == "" {
		return o, &usageError{err: errors.New("--secure needs --service, --manifest-hash, --client and --client-key")}
	}
	cred, err := loadCredential(f.clientName, f.clientKey)
	if err != nil {
		return o, &usageError{err: fmt.Errorf("--client-key: %w", err)}
	}
	o.Credential = cred
	h, err := manifest.ParseHash(f.manifestHash)
	if err != nil {
		return o, &usageError{err: fmt.Errorf("--manifest-hash: %w", err)}
	}
	o.ManifestHash = h
	o.AllowSimulation = f.allowSimulation
	for _, p := range f.simKeys {
		k, err := attest.LoadSimPlatformPublicKey(p)
		if err != nil {
			return o, &usageError{err: fmt.Errorf("--sim-platform-key: %w", err)}
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
	for _, m := range f.measurements {
		v, err := enclave.ParseMeasurement(m)
		if err != nil {
			return o, &usageError{err: fmt.Errorf("--coordinator-measurement: %w", err)}
		}
		o.CoordinatorPolicy.MREnclaves = append(o.CoordinatorPolicy.MREnclaves, v)
	}
	if len(o.CoordinatorPolicy.MREnclaves) == 0 {
		img, err := f.img.load(ctx, env)
		if err != nil {
			return o, fmt.Errorf("the coordinator's measurement (give --coordinator-measurement): %w", err)
		}
		o.CoordinatorPolicy.MREnclaves = [][32]byte{img.Measurement}
	}
	o.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return o, nil
}

// request verifies the coordinator, seals body to the service, sends it to
// address and returns the opened reply. A coordinator that fails
// verification is a rejection (exit code 3).
func (f *secureFlags) request(ctx context.Context, b *bus.Bus, o client.Options, address string, body []byte, opts []bus.DeliveryOption) ([]byte, error) {
	c, err := client.Connect(ctx, b, o)
	if err != nil {
		if errors.Is(err, client.ErrUntrusted) {
			return nil, &rejectedError{err: err}
		}
		return nil, err
	}
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
	b, closeAll, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	defer closeAll()
	out, err := sf.request(ctx, b, o, address, body, opts)
	if err != nil {
		return err
	}
	writeBody(env.stdout, out)
	return nil
}
