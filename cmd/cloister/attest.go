package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/attest"
)

func attestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attest",
		Short: "verify attestation evidence and issue simulated quotes",
	}
	return group(cmd, attestVerifyCommand(), attestSimQuoteCommand())
}

const simulationWarning = "WARNING: simulated evidence: no hardware protection, anyone holding the simulation platform key can forge it"

func attestVerifyCommand() *cobra.Command {
	var (
		collateral, at, policyFile, simKey, acceptTCB string
		asJSON, allowSim, allowDebug                  bool
	)
	cmd := &cobra.Command{
		Use:   "verify QUOTE",
		Short: "verify an SGX DCAP quote or simulated evidence, print its claims, steps and TCB status",
		Long: `QUOTE is a file (or - for stdin) holding a raw SGX DCAP v3 quote, a
simulated quote, encoded evidence, or any of these in hex.

The PCK chain is verified to the pinned Intel SGX Root CA. With --collateral
(a JSON bundle file or a directory of PCS files) the TCB Info, QE Identity and
CRLs are verified too and the TCB status is computed, at the --at time (now by
default).

Without --policy the evidence is judged by the safe default: a non-debug
enclave on a platform whose TCB status is UpToDate (so --collateral is
needed); no enclave identity is checked. Widen it with --allow-debug and
--accept-tcb (e.g. --accept-tcb UpToDate,SWHardeningNeeded). With --policy the
claims are checked against a policy (JSON), which also pins the enclave:

  {"mrenclaves": ["<hex>"], "mrsigner": "<hex>", "product_id": 0, "min_svn": 0,
   "allow_debug": false, "accepted_tcb": ["UpToDate"], "report_data": "<hex>",
   "allow_simulation": false}

--allow-debug and --accept-tcb widen a policy file's rules the same way.

Simulated evidence is refused unless --allow-simulation is given; it is then
checked against the simulation platform key of this machine (or --sim-key).

Exit status 3 when verification or the policy fails.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("attest verify takes one QUOTE, got %d arguments", len(args))}
			}
			opts := attest.VerifyOptions{AllowSimulation: allowSim}
			if allowSim {
				// Without the key, simulated evidence fails verification at
				// its "simulation platform key" step; other evidence does
				// not need it.
				path, err := simPlatformKeyPath(simKey)
				if err == nil {
					var k *ecdsa.PublicKey
					if k, err = attest.LoadSimPlatformPublicKey(path); err == nil {
						opts.SimPlatformKeys = []*ecdsa.PublicKey{k}
					}
				}
				if err != nil {
					fmt.Fprintf(env.stderr, "cloister: no simulation platform key to trust: %v\n", err)
				}
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return &usageError{err: fmt.Errorf("--at: %w", err)}
				}
				opts.At = t
			}
			accepted, err := parseTCBStatuses(acceptTCB)
			if err != nil {
				return &usageError{err: err}
			}
			// Without a policy file the default policy judges: it checks no
			// identity, only debug mode and TCB status (verifyAndReport).
			pol := &attest.Policy{}
			if policyFile != "" {
				b, err := readInput(env, policyFile)
				if err != nil {
					return fmt.Errorf("policy: %w", err)
				}
				if pol, err = attest.ParsePolicy(b); err != nil {
					return err
				}
			}
			pol.AllowSimulation = pol.AllowSimulation || allowSim
			pol.AllowDebug = pol.AllowDebug || allowDebug
			if len(accepted) > 0 {
				pol.AcceptedTCB = accepted
			}
			if collateral != "" {
				c, err := attest.LoadCollateral(collateral)
				if err != nil {
					if errors.Is(err, fs.ErrNotExist) {
						return err
					}
					// Collateral that is there but malformed fails verification.
					return &rejectedError{err: err}
				}
				opts.Collateral = c
			}
			raw, err := readInput(env, args[0])
			if err != nil {
				return fmt.Errorf("quote: %w", err)
			}
			ev, err := attest.DetectEvidence(maybeHex(raw))
			if err != nil {
				return &rejectedError{err: err}
			}
			if opts.At.IsZero() {
				opts.At = time.Now()
			}
			return verifyAndReport(ctx, env, ev, opts, pol, policyFile != "", asJSON)
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&collateral, "collateral", "", "collateral: a JSON `bundle` file or a directory of PCS files")
	fs.StringVar(&at, "at", "", "evaluation `time` (RFC 3339); default now")
	fs.StringVar(&policyFile, "policy", "", "policy JSON `file` to check the claims against")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fs.BoolVar(&allowSim, "allow-simulation", false, "accept simulated evidence (it proves nothing against a malicious host)")
	fs.StringVar(&simKey, "sim-key", "", "simulation platform key `file` to trust (default: this machine's)")
	fs.BoolVar(&allowDebug, "allow-debug", false, "accept debug enclaves (the host can read their memory)")
	fs.StringVar(&acceptTCB, "accept-tcb", "", "comma-separated TCB `statuses` to accept (default UpToDate only)")
	return cmd
}

// verifyReport is the --json output of attest verify.
type verifyReport struct {
	EvidenceType  attest.EvidenceType `json:"evidence_type"`
	EvaluatedAt   string              `json:"evaluated_at"`
	Accepted      bool                `json:"accepted"`
	Warning       string              `json:"warning,omitempty"`
	Steps         []stepReport        `json:"steps"`
	Claims        *attest.Claims      `json:"claims,omitempty"`
	Policy        string              `json:"policy"`
	PolicyRule    string              `json:"policy_rule,omitempty"`
	Hint          string              `json:"hint,omitempty"`
	Error         string              `json:"error,omitempty"`
	FailedStep    string              `json:"failed_step,omitempty"`
	TCBStatus     string              `json:"tcb_status"`
	AdvisoryIDs   []string            `json:"advisory_ids,omitempty"`
	QETCBStatus   string              `json:"qe_tcb_status,omitempty"`
	CollateralSet bool                `json:"collateral_given"`
}

type stepReport struct {
	Step    string `json:"step"`
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}

// parseTCBStatuses parses the --accept-tcb list.
func parseTCBStatuses(list string) ([]attest.TCBStatus, error) {
	if list == "" {
		return nil, nil
	}
	var out []attest.TCBStatus
	for _, name := range strings.Split(list, ",") {
		s := attest.TCBStatus(strings.TrimSpace(name))
		if !s.Valid() {
			return nil, fmt.Errorf("--accept-tcb: unknown TCB status %q (known: UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, Revoked)", name)
		}
		out = append(out, s)
	}
	return out, nil
}

// defaultPolicyName describes the judgement made without --policy, as
// pol (the safe default, perhaps widened by flags) makes it.
func defaultPolicyName(pol *attest.Policy) string {
	debug := "no debug enclave"
	if pol.AllowDebug {
		debug = "debug enclaves allowed"
	}
	tcb := "UpToDate"
	if len(pol.AcceptedTCB) > 0 {
		names := make([]string, len(pol.AcceptedTCB))
		for i, s := range pol.AcceptedTCB {
			names[i] = string(s)
		}
		tcb = strings.Join(names, ", ")
	}
	return fmt.Sprintf("default (%s, TCB %s; no enclave identity checked)", debug, tcb)
}

// widenHint says how to widen the default judgement after rule failed.
func widenHint(rule string, collateralGiven bool) string {
	switch rule {
	case attest.RuleDebug:
		return "to accept debug enclaves, add --allow-debug"
	case attest.RuleTCB:
		if !collateralGiven {
			return "give --collateral to evaluate the TCB status (then --accept-tcb widens the statuses accepted)"
		}
		return "to accept other TCB statuses, add --accept-tcb (e.g. --accept-tcb UpToDate,SWHardeningNeeded)"
	case attest.RuleSimulation:
		return "to accept simulated evidence, add --allow-simulation"
	}
	return ""
}

// verifyAndReport verifies ev and judges its claims with pol: the whole
// policy when fromFile, else only its platform rules (debug, TCB status,
// simulation), the safe default.
func verifyAndReport(ctx context.Context, env *cliEnv, ev *attest.Evidence, opts attest.VerifyOptions, pol *attest.Policy, fromFile, asJSON bool) error {
	rep := verifyReport{
		EvidenceType:  ev.Type,
		EvaluatedAt:   opts.At.UTC().Format(time.RFC3339),
		CollateralSet: opts.Collateral != nil,
	}
	prefix := defaultPolicyName(pol) + ": "
	if fromFile {
		prefix = ""
	}
	if ev.Type == attest.EvidenceSimulated {
		rep.Warning = simulationWarning
	}
	claims, verr := attest.Verify(ctx, ev, opts)
	var ve *attest.VerificationError
	switch {
	case verr == nil:
		for _, s := range claims.Steps {
			rep.Steps = append(rep.Steps, stepReport{Step: s.Step, Outcome: s.Outcome})
		}
		rep.Claims = claims
		rep.TCBStatus = claims.TCBStatus.String()
		rep.AdvisoryIDs = claims.AdvisoryIDs
		rep.QETCBStatus = string(claims.QETCBStatus)
		if claims.Simulated() {
			rep.TCBStatus = "simulated (no TCB)"
		}
	case errors.As(verr, &ve):
		for _, s := range ve.Passed {
			rep.Steps = append(rep.Steps, stepReport{Step: s.Step, Outcome: s.Outcome})
		}
		rep.Steps = append(rep.Steps, stepReport{Step: ve.Step, Outcome: "failed", Error: ve.Err.Error()})
		rep.FailedStep = ve.Step
		rep.Error = verr.Error()
		rep.TCBStatus = "unknown (verification failed)"
	default:
		return verr
	}
	var perr error
	switch {
	case verr != nil:
		rep.Policy = prefix + "not checked (verification failed)"
	default:
		if fromFile {
			perr = pol.Check(claims)
		} else {
			perr = pol.CheckPlatform(claims)
		}
		if perr == nil {
			rep.Policy = prefix + "ok"
		} else {
			rep.Policy = prefix + "failed: " + perr.Error()
			var pe *attest.PolicyError
			if errors.As(perr, &pe) {
				rep.PolicyRule = pe.Rule
				if h := widenHint(pe.Rule, opts.Collateral != nil); h != "" && !fromFile {
					rep.Hint = h
				}
			}
			rep.Error = perr.Error()
		}
	}
	rep.Accepted = verr == nil && perr == nil

	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(env.stdout, &rep, claims)
	}
	if verr != nil {
		return &rejectedError{err: verr}
	}
	if perr != nil {
		if rep.Hint != "" {
			perr = fmt.Errorf("%w (%s)", perr, rep.Hint)
		}
		return &rejectedError{err: perr}
	}
	return nil
}

func printReport(w io.Writer, rep *verifyReport, c *attest.Claims) {
	if rep.Warning != "" {
		fmt.Fprintf(w, "%s\n\n", rep.Warning)
	}
	fmt.Fprintf(w, "evidence:     %s\n", rep.EvidenceType)
	fmt.Fprintf(w, "evaluated at: %s\n", rep.EvaluatedAt)
	fmt.Fprintln(w, "steps:")
	for _, s := range rep.Steps {
		if s.Error != "" {
			fmt.Fprintf(w, "  %-26s FAILED: %s\n", s.Step, s.Error)
		} else {
			fmt.Fprintf(w, "  %-26s %s\n", s.Step, s.Outcome)
		}
	}
	if c != nil {
		fmt.Fprintln(w, "claims:")
		if c.Simulated() {
			fmt.Fprintf(w, "  %-12s %s\n", "type", "simulated")
		} else {
			fmt.Fprintf(w, "  %-12s %s\n", "type", c.Type)
		}
		fmt.Fprintf(w, "  %-12s %x\n", "mrenclave", c.MREnclave)
		fmt.Fprintf(w, "  %-12s %x\n", "mrsigner", c.MRSigner)
		fmt.Fprintf(w, "  %-12s %d\n", "product id", c.ProductID)
		fmt.Fprintf(w, "  %-12s %d\n", "svn", c.SVN)
		fmt.Fprintf(w, "  %-12s %t\n", "debug", c.Debug)
		fmt.Fprintf(w, "  %-12s %x\n", "attributes", c.Attributes)
		fmt.Fprintf(w, "  %-12s %x\n", "report data", c.ReportData)
		if c.FMSPC != "" {
			fmt.Fprintf(w, "  %-12s %s\n", "fmspc", c.FMSPC)
		}
	}
	fmt.Fprintln(w, "tcb:")
	fmt.Fprintf(w, "  %-12s %s\n", "status", rep.TCBStatus)
	if c != nil && c.CollateralChecked {
		fmt.Fprintf(w, "  %-12s %s\n", "advisories", orNone(strings.Join(c.AdvisoryIDs, ", ")))
		fmt.Fprintf(w, "  %-12s %s\n", "platform", c.PlatformTCBStatus)
		fmt.Fprintf(w, "  %-12s %s\n", "qe", c.QETCBStatus)
		fmt.Fprintf(w, "  %-12s %s\n", "tcb date", c.TCBDate.Format(time.DateOnly))
		if c.LatestTCBEvaluationDataNumber > 0 {
			fmt.Fprintf(w, "  %-12s %d (latest published: %d)\n", "eval number", c.TCBEvaluationDataNumber, c.LatestTCBEvaluationDataNumber)
		} else {
			fmt.Fprintf(w, "  %-12s %d\n", "eval number", c.TCBEvaluationDataNumber)
		}
	} else if c != nil && !c.Simulated() {
		fmt.Fprintf(w, "  %-12s %s\n", "note", "no collateral given (--collateral): TCB status not evaluated")
	}
	fmt.Fprintf(w, "policy:       %s\n", rep.Policy)
	if rep.Hint != "" {
		fmt.Fprintf(w, "hint:         %s\n", rep.Hint)
	}
	verdict := "REJECTED"
	if rep.Accepted {
		verdict = "ACCEPTED"
	}
	if rep.EvidenceType == attest.EvidenceSimulated {
		verdict += " (simulated)"
	}
	fmt.Fprintf(w, "result:       %s\n", verdict)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func attestSimQuoteCommand() *cobra.Command {
	var (
		reportData, out, mrenclave, mrsigner, simKey string
		productID, svn                               uint
		debugMode                                    bool
	)
	cmd := &cobra.Command{
		Use:   "sim-quote",
		Short: "issue a simulated quote (no hardware protection) signed by this machine's simulation platform key",
		Long: `Writes encoded simulated evidence to -o FILE (binary), or to stdout in hex.
The simulation platform key is created on first use under the user's config
directory (or use --sim-key). 'cloister attest verify --allow-simulation'
accepts the result on the same machine.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 0 {
				return &usageError{err: fmt.Errorf("attest sim-quote takes no arguments, got %q", args)}
			}
			var rd [64]byte
			b, err := hex.DecodeString(reportData)
			if err != nil || len(b) > 64 {
				return &usageError{err: fmt.Errorf("--report-data must be at most 64 bytes of hex, got %q", reportData)}
			}
			copy(rd[:], b)
			id := attest.SimIdentity{Debug: debugMode}
			if err := parseHex32(&id.MREnclave, "--mrenclave", mrenclave); err != nil {
				return err
			}
			if err := parseHex32(&id.MRSigner, "--mrsigner", mrsigner); err != nil {
				return err
			}
			if productID > 0xffff || svn > 0xffff {
				return &usageError{err: errors.New("--product-id and --svn must fit in 16 bits")}
			}
			id.ProductID, id.SVN = uint16(productID), uint16(svn)
			path, err := simPlatformKeyPath(simKey)
			if err != nil {
				return err
			}
			key, err := attest.LoadOrCreateSimPlatformKey(path)
			if err != nil {
				return err
			}
			iss, err := attest.NewSimIssuer(id, key)
			if err != nil {
				return err
			}
			ev, err := iss.Issue(ctx, rd)
			if err != nil {
				return err
			}
			enc, err := ev.MarshalBinary()
			if err != nil {
				return err
			}
			fmt.Fprintln(env.stderr, simulationWarning)
			if out == "" {
				_, err = fmt.Fprintln(env.stdout, hex.EncodeToString(enc))
				return err
			}
			if err := os.WriteFile(out, enc, 0o644); err != nil {
				return fmt.Errorf("-o/--output: %w", err)
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&reportData, "report-data", "", "report data, up to 64 bytes in `hex` (zero-padded)")
	fs.StringVarP(&out, "output", "o", "", "output `file` (default: hex on stdout)")
	fs.StringVar(&mrenclave, "mrenclave", "", "MRENCLAVE, 32 bytes in `hex` (default zeros)")
	fs.StringVar(&mrsigner, "mrsigner", "", "MRSIGNER, 32 bytes in `hex` (default zeros)")
	fs.UintVar(&productID, "product-id", 0, "ISV product ID")
	fs.UintVar(&svn, "svn", 0, "ISV SVN")
	fs.BoolVar(&debugMode, "debug", false, "claim a debug enclave")
	fs.StringVar(&simKey, "sim-key", "", "simulation platform key `file` (default: this machine's, created on first use)")
	return cmd
}

func parseHex32(dst *[32]byte, flagName, s string) error {
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return &usageError{err: fmt.Errorf("%s must be 32 bytes of hex, got %q", flagName, s)}
	}
	copy(dst[:], b)
	return nil
}

// readInput reads a file, or stdin for "-", up to 16 MiB.
func readInput(env *cliEnv, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = env.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	const limit = 16 << 20
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// maybeHex decodes b if it is entirely hex (whitespace allowed around it).
func maybeHex(b []byte) []byte {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || len(t)%2 != 0 {
		return b
	}
	d, err := hex.DecodeString(string(t))
	if err != nil {
		return b
	}
	return d
}
