package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultGramineRoot is where Gramine exposes its attestation pseudo-files.
const DefaultGramineRoot = "/dev/attestation"

// GramineIssuer issues SGX DCAP quotes through Gramine's /dev/attestation
// interface: it writes the report data to <Root>/user_report_data and reads
// the quote from <Root>/quote.
type GramineIssuer struct {
	// Root is the attestation directory; empty means DefaultGramineRoot.
	Root string
}

func (g GramineIssuer) root() string {
	if g.Root == "" {
		return DefaultGramineRoot
	}
	return g.Root
}

// Issue writes reportData and returns the quote Gramine produces for it. The
// quote is parsed and its report data compared with reportData, so a stale or
// foreign quote is refused.
func (g GramineIssuer) Issue(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root := g.root()
	if b, err := os.ReadFile(filepath.Join(root, "attestation_type")); err == nil {
		if t := strings.TrimSpace(string(bytes.TrimRight(b, "\x00"))); t != "dcap" {
			return nil, fmt.Errorf("attest: gramine: attestation type is %q, need dcap", t)
		}
	}
	f, err := os.OpenFile(filepath.Join(root, "user_report_data"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("attest: gramine: %w", err)
	}
	if _, err := f.Write(reportData[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("attest: gramine: write user_report_data: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("attest: gramine: write user_report_data: %w", err)
	}
	quote, err := readLimited(filepath.Join(root, "quote"), MaxQuoteSize)
	if err != nil {
		return nil, fmt.Errorf("attest: gramine: read quote: %w", err)
	}
	q, err := ParseQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("attest: gramine: quote: %w", err)
	}
	if q.Report.ReportData != reportData {
		return nil, errors.New("attest: gramine: the quote does not carry the report data just written (stale or foreign quote)")
	}
	return &Evidence{Type: EvidenceSGXDCAP, Quote: quote}, nil
}
