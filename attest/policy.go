package attest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Policy decides whether verified claims are acceptable.
//
// An enclave is identified by one of MREnclaves, or by MRSigner with
// ProductID; at least one of the two must be set, and when both are, both
// must match. MinSVN applies in every case.
type Policy struct {
	// MREnclaves lists the allowed enclave measurements.
	MREnclaves [][32]byte
	// MRSigner, when set, is the allowed signer; ProductID must match too.
	MRSigner *[32]byte
	// ProductID is the required ISV product ID (with MRSigner).
	ProductID uint16
	// MinSVN is the lowest accepted ISV SVN.
	MinSVN uint16
	// AllowDebug accepts debug enclaves, whose memory the host can read.
	AllowDebug bool
	// AcceptedTCB lists the accepted TCB statuses; empty means UpToDate only.
	AcceptedTCB []TCBStatus
	// ReportData, when set, must equal the claims' report data.
	ReportData *[64]byte
	// AllowSimulation accepts simulated evidence (which has no TCB status;
	// the TCB rule does not apply to it).
	AllowSimulation bool
}

// Policy rule names, as found in [PolicyError.Rule].
const (
	RuleSimulation = "simulation"
	RuleIdentity   = "identity"
	RuleMREnclave  = "mrenclave"
	RuleMRSigner   = "mrsigner"
	RuleProductID  = "product id"
	RuleMinSVN     = "min svn"
	RuleDebug      = "debug"
	RuleTCB        = "tcb status"
	RuleReportData = "report data"
)

// PolicyError reports which policy rule the claims broke.
type PolicyError struct {
	// Rule names the rule (one of the Rule constants).
	Rule string
	// Err says how it was broken.
	Err error
}

// Error names the rule and the reason.
func (e *PolicyError) Error() string {
	return fmt.Sprintf("attest: policy rule %q not met: %v", e.Rule, e.Err)
}

// Unwrap returns the reason.
func (e *PolicyError) Unwrap() error { return e.Err }

func ruleErr(rule, format string, a ...any) error {
	return &PolicyError{Rule: rule, Err: fmt.Errorf(format, a...)}
}

// Check returns nil if c satisfies the policy, or a [*PolicyError] naming
// the first rule it breaks.
func (p *Policy) Check(c *Claims) error {
	if err := p.checkKind(c); err != nil {
		return err
	}
	if len(p.MREnclaves) == 0 && p.MRSigner == nil {
		return ruleErr(RuleIdentity, "the policy names no MRENCLAVE and no MRSIGNER, so it would accept any enclave")
	}
	if len(p.MREnclaves) > 0 && !slices.Contains(p.MREnclaves, c.MREnclave) {
		return ruleErr(RuleMREnclave, "MRENCLAVE %x is not allowed", c.MREnclave)
	}
	if p.MRSigner != nil {
		if *p.MRSigner != c.MRSigner {
			return ruleErr(RuleMRSigner, "MRSIGNER %x is not %x", c.MRSigner, *p.MRSigner)
		}
		if p.ProductID != c.ProductID {
			return ruleErr(RuleProductID, "product ID %d is not %d", c.ProductID, p.ProductID)
		}
	}
	if c.SVN < p.MinSVN {
		return ruleErr(RuleMinSVN, "SVN %d is below the minimum %d", c.SVN, p.MinSVN)
	}
	if err := p.checkPlatform(c); err != nil {
		return err
	}
	if p.ReportData != nil && subtle.ConstantTimeCompare(p.ReportData[:], c.ReportData[:]) != 1 {
		return ruleErr(RuleReportData, "report data %x is not the expected %x", c.ReportData, *p.ReportData)
	}
	return nil
}

// CheckPlatform applies only the rules that do not name an enclave:
// simulation, debug mode and TCB status (AllowSimulation, AllowDebug and
// AcceptedTCB; the zero Policy therefore accepts only non-debug enclaves on
// UpToDate platforms, with collateral checked). It is the safe default for a
// verifier that has no enclave identity to pin, such as
// 'cloister attest verify' without a policy file; it does not make the
// claims trustworthy as a particular enclave.
func (p *Policy) CheckPlatform(c *Claims) error {
	if err := p.checkKind(c); err != nil {
		return err
	}
	return p.checkPlatform(c)
}

func (p *Policy) checkKind(c *Claims) error {
	if c == nil {
		return ruleErr(RuleIdentity, "no claims")
	}
	if c.Type == EvidenceSimulated && !p.AllowSimulation {
		return ruleErr(RuleSimulation, "evidence is simulated and the policy does not allow simulation")
	}
	if c.Type != EvidenceSimulated && c.Type != EvidenceSGXDCAP {
		return ruleErr(RuleIdentity, "unknown evidence type %q", c.Type)
	}
	return nil
}

func (p *Policy) checkPlatform(c *Claims) error {
	if c.Debug && !p.AllowDebug {
		return ruleErr(RuleDebug, "the enclave runs in debug mode (the host can read its memory) and the policy does not allow debug")
	}
	if c.Type != EvidenceSimulated {
		accepted := p.AcceptedTCB
		if len(accepted) == 0 {
			accepted = []TCBStatus{TCBUpToDate}
		}
		if c.TCBStatus == TCBStatusUnknown {
			return ruleErr(RuleTCB, "TCB status unknown (no collateral was checked); accepted: %s", joinStatuses(accepted))
		}
		if !slices.Contains(accepted, c.TCBStatus) {
			return ruleErr(RuleTCB, "TCB status %s is not accepted (accepted: %s)", c.TCBStatus, joinStatuses(accepted))
		}
	}
	return nil
}

func joinStatuses(s []TCBStatus) string {
	names := make([]string, len(s))
	for i, st := range s {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}

// policyJSON is the JSON form of a Policy; byte strings are hex.
type policyJSON struct {
	MREnclaves      []string    `json:"mrenclaves,omitempty"`
	MRSigner        string      `json:"mrsigner,omitempty"`
	ProductID       uint16      `json:"product_id"`
	MinSVN          uint16      `json:"min_svn"`
	AllowDebug      bool        `json:"allow_debug"`
	AcceptedTCB     []TCBStatus `json:"accepted_tcb,omitempty"`
	ReportData      string      `json:"report_data,omitempty"`
	AllowSimulation bool        `json:"allow_simulation"`
}

// MarshalJSON encodes the policy with hex strings for the byte fields.
func (p Policy) MarshalJSON() ([]byte, error) {
	j := policyJSON{
		ProductID:       p.ProductID,
		MinSVN:          p.MinSVN,
		AllowDebug:      p.AllowDebug,
		AcceptedTCB:     p.AcceptedTCB,
		AllowSimulation: p.AllowSimulation,
	}
	for _, m := range p.MREnclaves {
		j.MREnclaves = append(j.MREnclaves, hex.EncodeToString(m[:]))
	}
	if p.MRSigner != nil {
		j.MRSigner = hex.EncodeToString(p.MRSigner[:])
	}
	if p.ReportData != nil {
		j.ReportData = hex.EncodeToString(p.ReportData[:])
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a policy strictly: unknown fields, bad hex, wrong
// lengths and unknown TCB statuses are errors.
func (p *Policy) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j policyJSON
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("attest: policy: %w", err)
	}
	if dec.More() {
		return errors.New("attest: policy: trailing data")
	}
	var out Policy
	for i, s := range j.MREnclaves {
		var m [32]byte
		if err := decodeHexInto(m[:], s); err != nil {
			return fmt.Errorf("attest: policy: mrenclaves[%d]: %w", i, err)
		}
		out.MREnclaves = append(out.MREnclaves, m)
	}
	if j.MRSigner != "" {
		var m [32]byte
		if err := decodeHexInto(m[:], j.MRSigner); err != nil {
			return fmt.Errorf("attest: policy: mrsigner: %w", err)
		}
		out.MRSigner = &m
	}
	if j.ReportData != "" {
		var rd [64]byte
		if err := decodeHexInto(rd[:], j.ReportData); err != nil {
			return fmt.Errorf("attest: policy: report_data: %w", err)
		}
		out.ReportData = &rd
	}
	for _, s := range j.AcceptedTCB {
		if !s.Valid() {
			return fmt.Errorf("attest: policy: accepted_tcb: unknown TCB status %q", s)
		}
	}
	out.ProductID, out.MinSVN, out.AllowDebug = j.ProductID, j.MinSVN, j.AllowDebug
	out.AcceptedTCB, out.AllowSimulation = j.AcceptedTCB, j.AllowSimulation
	*p = out
	return nil
}

// decodeHexInto decodes exactly len(dst) bytes of hex into dst.
func decodeHexInto(dst []byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// ParsePolicy decodes a policy from its JSON form.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	if err := p.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return &p, nil
}

// VerifyWithPolicy verifies ev and checks its claims against p, the usual
// pairing: simulated evidence is verified when either opts or p allows
// simulation, and accepted only when p does. The error is a
// [*VerificationError] or a [*PolicyError]; the claims are returned whenever
// verification succeeded, even if the policy then failed.
func VerifyWithPolicy(ctx context.Context, ev *Evidence, opts VerifyOptions, p *Policy) (*Claims, error) {
	if p == nil {
		return nil, errors.New("attest: no policy")
	}
	opts.AllowSimulation = opts.AllowSimulation || p.AllowSimulation
	c, err := Verify(ctx, ev, opts)
	if err != nil {
		return nil, err
	}
	return c, p.Check(c)
}
