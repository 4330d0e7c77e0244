package trusted

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/seal"
)

// EvidenceFunc produces attestation evidence inside the enclave; see
// Options.Evidence. The package attest imports crypto/x509 and with it the
// network stack, so images that want attest's issuers adapt them with a
// function rather than this package importing attest.
type EvidenceFunc func(ctx context.Context, reportData [64]byte) (*Evidence, error)

// attestationRoot returns the Gramine attestation directory if the enclave
// runs under Gramine with remote attestation, "" otherwise.
func (a *App) attestationRoot() string {
	root := seal.GramineKeySource{Root: a.opts.GramineRoot}.Dir()
	if _, err := os.Stat(filepath.Join(root, "user_report_data")); err != nil {
		return ""
	}
	return root
}

// gramineEvidence writes the report data and reads the quote Gramine
// produces for it. The two steps are one critical section per process.
func (a *App) gramineEvidence(root string, reportData [64]byte) (*Evidence, error) {
	a.evidenceMu.Lock()
	defer a.evidenceMu.Unlock()
	if err := os.WriteFile(filepath.Join(root, "user_report_data"), reportData[:], 0o600); err != nil {
		return nil, fmt.Errorf("%w: write Gramine report data: %w", ErrNoEvidence, err)
	}
	q, err := os.ReadFile(filepath.Join(root, "quote"))
	if err != nil {
		return nil, fmt.Errorf("%w: read Gramine quote: %w", ErrNoEvidence, err)
	}
	return &Evidence{Type: "sgx-dcap", Quote: q}, nil
}
