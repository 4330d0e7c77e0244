package attest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TCBStatus is a TCB status as defined by Intel's PCS (TCB Info and QE
// Identity), or [TCBStatusUnknown] when no collateral was checked.
type TCBStatus string

// TCB statuses.
const (
	TCBStatusUnknown                     TCBStatus = ""
	TCBUpToDate                          TCBStatus = "UpToDate"
	TCBSWHardeningNeeded                 TCBStatus = "SWHardeningNeeded"
	TCBConfigurationNeeded               TCBStatus = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded TCBStatus = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         TCBStatus = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      TCBStatus = "OutOfDateConfigurationNeeded"
	TCBRevoked                           TCBStatus = "Revoked"
)

// Valid reports whether s is one of the named statuses Intel defines (not
// [TCBStatusUnknown]).
func (s TCBStatus) Valid() bool {
	switch s {
	case TCBUpToDate, TCBSWHardeningNeeded, TCBConfigurationNeeded, TCBConfigurationAndSWHardeningNeeded,
		TCBOutOfDate, TCBOutOfDateConfigurationNeeded, TCBRevoked:
		return true
	}
	return false
}

// String returns the status name, or "unknown".
func (s TCBStatus) String() string {
	if s == TCBStatusUnknown {
		return "unknown"
	}
	return string(s)
}

// Claims are what verified evidence says about an enclave and its platform.
type Claims struct {
	// Type is the kind of evidence the claims come from.
	Type EvidenceType
	// MREnclave is the enclave measurement.
	MREnclave [32]byte
	// MRSigner is the hash of the enclave signer's public key.
	MRSigner [32]byte
	// ProductID is the ISV product ID.
	ProductID uint16
	// SVN is the ISV security version number.
	SVN uint16
	// Debug is set when the enclave runs in debug mode (its memory is readable
	// by the host).
	Debug bool
	// Attributes are the SGX attributes (flags and XFRM).
	Attributes [16]byte
	// ReportData is the 64 bytes the enclave bound into the evidence.
	ReportData [64]byte

	// TCBStatus is the platform TCB status converged with the QE TCB status,
	// or TCBStatusUnknown without collateral (and for simulated evidence).
	TCBStatus TCBStatus
	// AdvisoryIDs are the Intel security advisories that apply (platform and
	// QE), when collateral was checked.
	AdvisoryIDs []string
	// PlatformTCBStatus is the platform TCB status from the TCB Info alone.
	PlatformTCBStatus TCBStatus
	// QETCBStatus is the quoting enclave's TCB status from the QE Identity.
	QETCBStatus TCBStatus
	// QEAdvisoryIDs are the advisories of the QE's TCB level.
	QEAdvisoryIDs []string
	// TCBDate is the date of the matched platform TCB level.
	TCBDate time.Time
	// FMSPC is the platform's FMSPC from the PCK certificate (SGX DCAP only).
	FMSPC string
	// TCBEvaluationDataNumber and QETCBEvaluationDataNumber say which TCB
	// recovery the TCB Info and QE Identity reflect (higher is newer).
	TCBEvaluationDataNumber, QETCBEvaluationDataNumber int
	// LatestTCBEvaluationDataNumber is the highest number in the TCB
	// evaluation data numbers collateral, when given: a TCB Info with a lower
	// number predates the latest TCB recovery.
	LatestTCBEvaluationDataNumber int
	// CollateralChecked is set when TCB collateral was verified.
	CollateralChecked bool

	// Steps names the verification steps that were run, in order, each with
	// its outcome.
	Steps []StepResult
}

// StepResult is one verification step and its outcome.
type StepResult struct {
	// Step names the step, e.g. "pck chain".
	Step string
	// Outcome is "ok" or "skipped: <why>".
	Outcome string
}

// Simulated reports whether the claims come from simulated evidence.
func (c *Claims) Simulated() bool { return c.Type == EvidenceSimulated }

// String summarises the claims on one line. Claims from simulated evidence
// start with "SIMULATED".
func (c *Claims) String() string {
	var b strings.Builder
	if c.Simulated() {
		b.WriteString("SIMULATED evidence (no hardware protection, simulated): ")
	} else {
		fmt.Fprintf(&b, "%s: ", c.Type)
	}
	fmt.Fprintf(&b, "mrenclave=%s mrsigner=%s product=%d svn=%d debug=%t",
		hex.EncodeToString(c.MREnclave[:]), hex.EncodeToString(c.MRSigner[:]), c.ProductID, c.SVN, c.Debug)
	if c.Simulated() {
		b.WriteString(" tcb=simulated")
	} else {
		fmt.Fprintf(&b, " tcb=%s", c.TCBStatus)
		if len(c.AdvisoryIDs) > 0 {
			fmt.Fprintf(&b, " advisories=%s", strings.Join(c.AdvisoryIDs, ","))
		}
	}
	return b.String()
}

// claimsJSON is the JSON form of Claims: byte strings in hex.
type claimsJSON struct {
	Type              EvidenceType `json:"type"`
	Simulated         bool         `json:"simulated"`
	MREnclave         string       `json:"mrenclave"`
	MRSigner          string       `json:"mrsigner"`
	ProductID         uint16       `json:"product_id"`
	SVN               uint16       `json:"svn"`
	Debug             bool         `json:"debug"`
	Attributes        string       `json:"attributes"`
	ReportData        string       `json:"report_data"`
	TCBStatus         TCBStatus    `json:"tcb_status,omitempty"`
	AdvisoryIDs       []string     `json:"advisory_ids,omitempty"`
	PlatformTCBStatus TCBStatus    `json:"platform_tcb_status,omitempty"`
	QETCBStatus       TCBStatus    `json:"qe_tcb_status,omitempty"`
	QEAdvisoryIDs     []string     `json:"qe_advisory_ids,omitempty"`
	TCBDate           string       `json:"tcb_date,omitempty"`
	FMSPC             string       `json:"fmspc,omitempty"`
	TCBEvalNumber     int          `json:"tcb_evaluation_data_number,omitempty"`
	CollateralChecked bool         `json:"collateral_checked"`
}

// MarshalJSON encodes the claims with hex strings for byte fields, for
// reports and logs. (Steps are not included.)
func (c *Claims) MarshalJSON() ([]byte, error) {
	j := claimsJSON{
		Type:              c.Type,
		Simulated:         c.Simulated(),
		MREnclave:         hex.EncodeToString(c.MREnclave[:]),
		MRSigner:          hex.EncodeToString(c.MRSigner[:]),
		ProductID:         c.ProductID,
		SVN:               c.SVN,
		Debug:             c.Debug,
		Attributes:        hex.EncodeToString(c.Attributes[:]),
		ReportData:        hex.EncodeToString(c.ReportData[:]),
		TCBStatus:         c.TCBStatus,
		AdvisoryIDs:       c.AdvisoryIDs,
		PlatformTCBStatus: c.PlatformTCBStatus,
		QETCBStatus:       c.QETCBStatus,
		QEAdvisoryIDs:     c.QEAdvisoryIDs,
		FMSPC:             c.FMSPC,
		TCBEvalNumber:     c.TCBEvaluationDataNumber,
		CollateralChecked: c.CollateralChecked,
	}
	if !c.TCBDate.IsZero() {
		j.TCBDate = c.TCBDate.UTC().Format(time.RFC3339)
	}
	return json.Marshal(j)
}
