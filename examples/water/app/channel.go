package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/secure"
)

// AnalyticsPackage is the analytics enclave image's main package.
const AnalyticsPackage = "github.com/cloister-dev/cloister/examples/water/analytics"

// BuildImage builds the analytics enclave image into path (reproducibly:
// the same source and toolchain give the same measurement), from the
// module of the working directory, or from this binary's Cloister. The Go
// build cache makes builds after the first quick.
func BuildImage(ctx context.Context, path string) (*enclave.Image, error) {
	img, err := enclave.BuildPackage(ctx, AnalyticsPackage, path, enclave.BuildOptions{
		Signer: "cloister-examples", ProductID: 7, SVN: 1,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("app: build the analytics image (with Go installed): %w", err)
	}
	return img, nil
}

// Attestation is what a verifier learned about a trusted service.
type Attestation struct {
	Service      string `json:"service"`
	Address      string `json:"address"`
	Measurement  string `json:"measurement,omitempty"`
	Signer       string `json:"mrsigner,omitempty"`
	EvidenceType string `json:"evidence_type,omitempty"`
	Simulated    bool   `json:"simulated"`
	Verified     bool   `json:"verified"`
	ChannelKey   string `json:"channel_key,omitempty"` // the attested key's first bytes
	// Manifest is the manifest hash a verified coordinator serves.
	Manifest string    `json:"manifest,omitempty"`
	Checked  time.Time `json:"checked"`
	Error    string    `json:"error,omitempty"`
	// Warning says what the evidence does not promise.
	Warning string `json:"warning,omitempty"`
}

// AttestAnalytics asks analytics for its channel key and evidence, checks
// the evidence (simulated evidence signed by one of simKeys is accepted:
// the process backend has no SGX) against the expected measurement and a
// fresh nonce, and returns the key.
func AttestAnalytics(ctx context.Context, b *bus.Bus, measurement enclave.Measurement, simKeys []*ecdsa.PublicKey) (*secure.PublicKey, Attestation, error) {
	att := Attestation{Service: ServiceAnalytics, Address: monitor.AddressAttest, Checked: time.Now()}
	fail := func(err error) (*secure.PublicKey, Attestation, error) {
		att.Error = err.Error()
		return nil, att, err
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	m, err := b.Request(ctx, monitor.AddressAttest, nonce, bus.Timeout(5*time.Second))
	if err != nil {
		return fail(fmt.Errorf("app: attest analytics: %w", err))
	}
	var resp monitor.AttestResponse
	if err := m.Decode(&resp); err != nil {
		return fail(fmt.Errorf("app: attest analytics: %w", err))
	}
	att.EvidenceType = resp.EvidenceType
	claims, err := attest.Verify(ctx, &attest.Evidence{Type: attest.EvidenceType(resp.EvidenceType), Quote: resp.Quote},
		attest.VerifyOptions{AllowSimulation: true, SimPlatformKeys: simKeys})
	if err != nil {
		return fail(fmt.Errorf("app: analytics evidence: %w", err))
	}
	att.Measurement = hex.EncodeToString(claims.MREnclave[:])
	att.Signer = hex.EncodeToString(claims.MRSigner[:])
	att.Simulated = claims.Simulated()
	if att.Simulated {
		att.Warning = "simulated evidence: no SGX here; it promises nothing against a malicious host"
	}
	rd := monitor.ChannelReportData(resp.PublicKey, nonce)
	policy := attest.Policy{MREnclaves: [][32]byte{measurement}, AllowSimulation: true, ReportData: &rd, AllowDebug: true}
	if err := policy.Check(claims); err != nil {
		return fail(fmt.Errorf("app: analytics evidence: %w", err))
	}
	pub, err := secure.ParsePublicKey(resp.PublicKey)
	if err != nil {
		return fail(fmt.Errorf("app: analytics channel key: %w", err))
	}
	att.Verified = true
	att.ChannelKey = fmt.Sprintf("%x", resp.PublicKey[:min(8, len(resp.PublicKey))])
	return pub, att, nil
}

// Sealer seals readings for analytics.
type Sealer struct {
	pub  *secure.PublicKey // nil: plain
	info []byte
	// client: the trusted runtime opens the readings (coordinator mode),
	// so they carry no channel header.
	client bool
}

// NewSealer returns a Sealer to pub under the channel info of the
// analytics image with measurement; a nil pub sends plain readings.
func NewSealer(pub *secure.PublicKey, measurement enclave.Measurement) *Sealer {
	return &Sealer{pub: pub, info: secure.ChannelInfo(monitor.ChannelService, measurement)}
}

// Seal returns the body and headers of a reading for analytics.
func (s *Sealer) Seal(plaintext []byte) ([]byte, bus.Headers, error) {
	if s == nil || s.pub == nil {
		return plaintext, nil, nil
	}
	_, msg, err := secure.SealRequest(s.pub, s.info, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("app: seal a reading: %w", err)
	}
	if s.client {
		return msg, nil, nil
	}
	return msg, bus.Headers{monitor.HeaderChannel: monitor.ChannelHPKE}, nil
}
