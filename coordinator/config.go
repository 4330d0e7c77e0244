package coordinator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
)

// Config is what the host may configure in a coordinator instance: JSON
// in the Init message (trusted.Runtime.Config; node.EnclaveConfig.InitConfig;
// 'cloister coordinator --collateral --sim-platform-key'). It is
// host-supplied, so nothing in it widens what the manifest allows:
// collateral is verified against Intel's root like the quotes it serves,
// and simulation platform keys matter only when the manifest allows
// simulation, which promises nothing against a malicious host anyway.
type Config struct {
	// Collateral is an SGX DCAP collateral bundle (attest.ParseCollateralBundle),
	// used to verify DCAP evidence down to its TCB status.
	Collateral json.RawMessage `json:"collateral,omitempty"`
	// SimPlatformKeys are the PKIX "PUBLIC KEY" PEMs of the simulation
	// platform keys trusted: the host's own (see TrustSimulationRoot) and
	// other machines' of a simulated cluster. With none, simulated
	// evidence is refused.
	SimPlatformKeys []string `json:"sim_platform_keys,omitempty"`
	// Slot is the replica slot this instance fills when the manifest
	// declares freshness: 0 to manifest.MaxReplicas-1 (default 0), one
	// slot per replica, on different nodes. The host chooses it, which
	// grants it nothing: a slot counts only in its current incarnation,
	// admitted by a quorum of the other slots (see the package doc).
	Slot int `json:"slot,omitempty"`
	// Replicas is how many replicas the host runs. With more than one, a
	// replica without stored state looks for the group before slot 0
	// makes a new one; the manifest's freshness section, once set,
	// decides the group's size.
	Replicas int `json:"replicas,omitempty"`
}

// parsedConfig is a checked Config.
type parsedConfig struct {
	slot       int
	replicas   int
	collateral *attest.Collateral
	simKeys    []*ecdsa.PublicKey
}

// parseConfig decodes a Config strictly; empty means none.
func parseConfig(b []byte) (*parsedConfig, error) {
	pc := &parsedConfig{}
	if len(bytes.TrimSpace(b)) == 0 {
		return pc, nil
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("coordinator: configuration: %w", err)
	}
	if dec.More() {
		return nil, errors.New("coordinator: configuration: trailing data")
	}
	if c.Slot < 0 || c.Slot >= manifest.MaxReplicas {
		return nil, fmt.Errorf("coordinator: configuration: slot %d, want 0 to %d", c.Slot, manifest.MaxReplicas-1)
	}
	if c.Replicas < 0 || c.Replicas > manifest.MaxReplicas {
		return nil, fmt.Errorf("coordinator: configuration: replicas %d, want 0 to %d", c.Replicas, manifest.MaxReplicas)
	}
	pc.slot, pc.replicas = c.Slot, c.Replicas
	if len(c.Collateral) > 0 {
		var err error
		if pc.collateral, err = attest.ParseCollateralBundle(c.Collateral); err != nil {
			return nil, fmt.Errorf("coordinator: configuration: collateral: %w", err)
		}
	}
	for i, p := range c.SimPlatformKeys {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("coordinator: configuration: sim_platform_keys[%d]: want a PEM \"PUBLIC KEY\"", i)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("coordinator: configuration: sim_platform_keys[%d]: %w", i, err)
		}
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("coordinator: configuration: sim_platform_keys[%d]: a %T, want ECDSA P-256", i, k)
		}
		pc.simKeys = append(pc.simKeys, ek)
	}
	return pc, nil
}

// EncodeSimPlatformKey returns k as a Config.SimPlatformKeys entry.
func EncodeSimPlatformKey(k *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", fmt.Errorf("coordinator: simulation platform key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// TrustSimulationRoot adds the platform key of root (the simulation root
// of the host that runs the enclaves) to c.SimPlatformKeys.
func (c *Config) TrustSimulationRoot(root *attest.SimulationRoot) error {
	p, err := EncodeSimPlatformKey(root.PlatformPublicKey())
	if err != nil {
		return err
	}
	c.SimPlatformKeys = append(c.SimPlatformKeys, p)
	return nil
}

// ReplicaAddresses are the address patterns a host lets the replica in
// slot consume (node.EnclaveConfig.Addresses): the coordinator's public
// addresses, which any live replica answers, and the slot's own
// (provision.ReplicaAddress), never another slot's.
func ReplicaAddresses(slot int) []string {
	return []string{"cloister.coordinator.*", "cloister.coordinator.manifest.*", "cloister.coordinator.fresh.*", provision.ReplicaPattern(slot)}
}
