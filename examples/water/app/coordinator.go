package app

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/provision"
)

// CoordinatorPackage is the coordinator's enclave image.
const CoordinatorPackage = application.CoordinatorPackage

// ServiceCoordinator names the coordinator's deployment (it runs on the
// node of analytics when Security is "coordinator").
const ServiceCoordinator = application.CoordinatorService

// ConnectCoordinator verifies the coordinator (its image's measurement, the
// pinned manifest hash, simulated evidence accepted when signed by one of
// simKeys) and returns the client and what was verified.
func ConnectCoordinator(ctx context.Context, b *bus.Bus, coordinator enclave.Measurement, manifestHash [32]byte, simKeys []*ecdsa.PublicKey, logger *slog.Logger) (*client.Client, Attestation, error) {
	att := Attestation{Service: ServiceCoordinator, Address: provision.AddressAttest, Checked: time.Now()}
	cl, err := client.Connect(ctx, b, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coordinator}},
		ManifestHash:      manifestHash, AllowSimulation: true, SimPlatformKeys: simKeys, Timeout: 5 * time.Second, Logger: logger,
	})
	if err != nil {
		att.Error = err.Error()
		return nil, att, fmt.Errorf("app: coordinator: %w", err)
	}
	c := cl.Claims()
	att.Measurement = fmt.Sprintf("%x", c.MREnclave)
	att.Signer = fmt.Sprintf("%x", c.MRSigner)
	att.EvidenceType = string(c.Type)
	att.Simulated = c.Simulated()
	att.Verified = true
	att.Manifest = fmt.Sprintf("%x", manifestHash)
	if att.Simulated {
		att.Warning = "simulated evidence: no SGX here; it promises nothing against a malicious host"
	}
	return cl, att, nil
}

// manifestSummary names the manifest for the banner.
func (a *App) manifestSummary() string {
	if a.manifest == nil {
		return ""
	}
	return strings.TrimSpace(fmt.Sprintf("manifest %s (coordinator %s, analytics %s)", a.manifest.HashHex(),
		a.coordImg.Measurement.String()[:16], a.img.Measurement.String()[:16]))
}
