package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sgxTestdata returns ../shared/testdata/sgx relative to the module root, or
// skips the test when it is absent.
func sgxTestdata(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
	td := filepath.Join(dir, "..", "shared", "testdata", "sgx")
	if _, err := os.Stat(td); err != nil {
		t.Skipf("shared test data absent: %v", err)
	}
	return td
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	code = run(context.Background(), env, args)
	return code, out.String(), errOut.String()
}

func TestAttestVerifyPhalaWithCollateral(t *testing.T) {
	td := sgxTestdata(t)
	quote := filepath.Join(td, "phala_sgx_quote.dat")
	col := filepath.Join(td, "phala_sgx_quote_collateral.json")
	// The safe default (no --policy) refuses this platform, whose TCB needs
	// configuration and software hardening, and says how to widen it.
	code, out, errOut := runCLI(t, "attest", "verify", quote, "--collateral", col, "--at", "2025-07-01T00:00:00Z")
	if code != exitRejected || !strings.Contains(out, "REJECTED") || !strings.Contains(errOut, "--accept-tcb") ||
		!strings.Contains(out, "hint:") || !strings.Contains(out, "default (no debug enclave, TCB UpToDate") {
		t.Fatalf("default judgement: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "attest", "verify", quote, "--collateral", col, "--at", "2025-07-01T00:00:00Z",
		"--accept-tcb", "UpToDate,ConfigurationAndSWHardeningNeeded")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
		"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
		"ConfigurationAndSWHardeningNeeded", "INTEL-SA-00289, INTEL-SA-00615",
		"pck chain                  ok", "tcb info signature         ok", "UpToDate", "ACCEPTED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = runCLI(t, "attest", "verify", "--json", "--at", "2025-07-01T00:00:00Z", "--collateral", col, "--accept-tcb", "ConfigurationAndSWHardeningNeeded", quote)
	if code != exitOK {
		t.Fatalf("--json exit %d\n%s", code, out)
	}
	var rep struct {
		Accepted bool   `json:"accepted"`
		TCB      string `json:"tcb_status"`
		QE       string `json:"qe_tcb_status"`
		Adv      []string
		Claims   struct {
			MREnclave  string `json:"mrenclave"`
			Debug      bool   `json:"debug"`
			ReportData string `json:"report_data"`
		} `json:"claims"`
		Steps []struct{ Step, Outcome string } `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out)
	}
	if !rep.Accepted || rep.TCB != "ConfigurationAndSWHardeningNeeded" || rep.QE != "UpToDate" || rep.Claims.MREnclave != "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb" || len(rep.Steps) != 15 {
		t.Errorf("report %+v", rep)
	}

	// Policy: UpToDate only (the default) rejects this platform; widened, it passes.
	dir := t.TempDir()
	strict := filepath.Join(dir, "strict.json")
	os.WriteFile(strict, []byte(`{"mrenclaves":["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]}`), 0o600)
	code, out, errOut = runCLI(t, "attest", "verify", quote, "--collateral", col, "--at", "2025-07-01T00:00:00Z", "--policy", strict)
	if code != exitRejected || !strings.Contains(errOut, "tcb status") || !strings.Contains(out, "REJECTED") {
		t.Errorf("strict policy: exit %d\n%s\n%s", code, out, errOut)
	}
	wide := filepath.Join(dir, "wide.json")
	os.WriteFile(wide, []byte(`{"mrsigner":"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6","accepted_tcb":["UpToDate","ConfigurationAndSWHardeningNeeded"]}`), 0o600)
	code, out, errOut = runCLI(t, "attest", "verify", quote, "--collateral", col, "--at", "2025-07-01T00:00:00Z", "--policy", wide)
	if code != exitOK || !strings.Contains(out, "policy:       ok") {
		t.Errorf("wide policy: exit %d\n%s\n%s", code, out, errOut)
	}
	// Without collateral the TCB status is unknown, which no policy accepts.
	code, _, errOut = runCLI(t, "attest", "verify", quote, "--policy", wide)
	if code != exitRejected || !strings.Contains(errOut, "unknown") {
		t.Errorf("no collateral + policy: exit %d %s", code, errOut)
	}
}

func TestAttestVerifyRejects(t *testing.T) {
	td := sgxTestdata(t)
	// Expired collateral at today's date.
	code, out, errOut := runCLI(t, "attest", "verify", filepath.Join(td, "phala_sgx_quote.dat"), "--collateral", filepath.Join(td, "phala_sgx_quote_collateral.json"))
	if code != exitRejected || !strings.Contains(errOut, "TCB Info expired at 2025-07-19T10:56:11Z") || !strings.Contains(out, "collateral validity        FAILED") {
		t.Errorf("expired: exit %d\n%s\n%s", code, out, errOut)
	}
	// The synthetic sample.
	code, _, errOut = runCLI(t, "attest", "verify", filepath.Join(td, "synthetic", "intel_qvl_sample_quote.dat"))
	if code != exitRejected || !strings.Contains(errOut, "pck chain") {
		t.Errorf("synthetic: exit %d %s", code, errOut)
	}
	// A flipped bit in the report body.
	raw, err := os.ReadFile(filepath.Join(td, "mobilecoin_hw_quote.dat"))
	if err != nil {
		t.Fatal(err)
	}
	raw[48+100] ^= 4
	bad := filepath.Join(t.TempDir(), "bad.dat")
	os.WriteFile(bad, raw, 0o600)
	code, _, errOut = runCLI(t, "attest", "verify", bad)
	if code != exitRejected || !strings.Contains(errOut, "quote signature") {
		t.Errorf("flipped: exit %d %s", code, errOut)
	}
	// Usage errors.
	if code, _, _ := runCLI(t, "attest", "verify"); code != exitUsage {
		t.Errorf("no quote: exit %d", code)
	}
	if code, _, _ := runCLI(t, "attest", "verify", bad, "--at", "yesterday"); code != exitUsage {
		t.Errorf("bad --at: exit %d", code)
	}
}

func TestAttestVerifyAutomataHexAndDir(t *testing.T) {
	td := sgxTestdata(t)
	code, out, errOut := runCLI(t, "attest", "verify", filepath.Join(td, "automata_quotev3.hex"),
		"--collateral", filepath.Join(td, "automata_collateral_2025-08"), "--at", "2025-08-20T00:00:00Z", "--accept-tcb", "UpToDate,SWHardeningNeeded")
	if code != exitOK || !strings.Contains(out, "SWHardeningNeeded") || !strings.Contains(out, "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd") ||
		!strings.Contains(out, "skipped: collateral has no root CA CRL") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestAttestSimQuoteRoundTrip(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	out := filepath.Join(t.TempDir(), "sim.ev")
	mr := strings.Repeat("ab", 32)
	code, _, errOut := runCLI(t, "attest", "sim-quote", "--report-data", "c0ffee", "-o", out, "--mrenclave", mr)
	if code != exitOK || !strings.Contains(errOut, "simulated") {
		t.Fatalf("sim-quote: exit %d %s", code, errOut)
	}
	code, stdout, errOut := runCLI(t, "attest", "verify", out, "--allow-simulation")
	if code != exitOK || !strings.Contains(stdout, "simulated") || !strings.Contains(stdout, mr) || !strings.Contains(stdout, "c0ffee00") {
		t.Fatalf("verify --allow-simulation: exit %d\n%s\n%s", code, stdout, errOut)
	}
	// Refused without --allow-simulation.
	code, stdout, errOut = runCLI(t, "attest", "verify", out)
	if code != exitRejected || !strings.Contains(errOut, "simulation") {
		t.Errorf("verify without --allow-simulation: exit %d\n%s\n%s", code, stdout, errOut)
	}
	// A policy pinning the MRENCLAVE, with simulation allowed by the flag.
	pol := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(pol, []byte(`{"mrenclaves":["`+mr+`"]}`), 0o600)
	if code, stdout, errOut = runCLI(t, "attest", "verify", out, "--allow-simulation", "--policy", pol); code != exitOK {
		t.Errorf("policy + simulation: exit %d\n%s\n%s", code, stdout, errOut)
	}
	// Hex on stdout, read back from stdin.
	code, hexOut, _ := runCLI(t, "attest", "sim-quote", "--report-data", "01")
	if code != exitOK {
		t.Fatalf("sim-quote to stdout: exit %d", code)
	}
	var o, e bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(hexOut), stdout: &o, stderr: &e}
	if code := run(context.Background(), env, []string{"attest", "verify", "--allow-simulation", "--json", "-"}); code != exitOK || !strings.Contains(o.String(), `"simulated": true`) {
		t.Errorf("stdin: exit %d\n%s\n%s", code, o.String(), e.String())
	}
	if code, _, _ := runCLI(t, "attest", "sim-quote", "--report-data", strings.Repeat("00", 65)); code != exitUsage {
		t.Errorf("65 bytes of report data: exit %d", code)
	}
	// Where the key that signed it is not kept, it is refused.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code, stdout, errOut = runCLI(t, "attest", "verify", out, "--allow-simulation")
	if code != exitRejected || !strings.Contains(stdout, "simulation platform key") || !strings.Contains(errOut, "no simulation platform key to trust") {
		t.Errorf("verify without the platform key: exit %d\n%s\n%s", code, stdout, errOut)
	}
}

func TestAttestVerifyDefaultRefusesDebugAndUnknownTCB(t *testing.T) {
	td := sgxTestdata(t)
	// The mobilecoin quote is from a debug enclave: refused by default,
	// with the flag that widens the judgement named.
	debugQuote := filepath.Join(td, "mobilecoin_hw_quote.dat")
	code, out, errOut := runCLI(t, "attest", "verify", debugQuote)
	if code != exitRejected || !strings.Contains(errOut, "debug") || !strings.Contains(errOut, "--allow-debug") || !strings.Contains(out, "REJECTED") {
		t.Errorf("debug enclave: exit %d\n%s\n%s", code, out, errOut)
	}
	// Allowed debug, its TCB status is still unknown without collateral.
	code, out, errOut = runCLI(t, "attest", "verify", debugQuote, "--allow-debug")
	if code != exitRejected || !strings.Contains(errOut, "TCB status unknown") || !strings.Contains(errOut, "--collateral") {
		t.Errorf("debug allowed, no collateral: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "attest", "verify", "--json", debugQuote)
	var rep struct {
		Accepted bool   `json:"accepted"`
		Rule     string `json:"policy_rule"`
		Hint     string `json:"hint"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out)
	}
	if code != exitRejected || rep.Accepted || rep.Rule != "debug" || !strings.Contains(rep.Hint, "--allow-debug") {
		t.Errorf("--json: exit %d %+v", code, rep)
	}
	if code, _, _ := runCLI(t, "attest", "verify", debugQuote, "--accept-tcb", "Fine"); code != exitUsage {
		t.Errorf("unknown --accept-tcb status: exit %d", code)
	}
}

func TestAttestVerifyRejectsCorruptedEmbeddedRoot(t *testing.T) {
	td := sgxTestdata(t)
	raw, err := os.ReadFile(filepath.Join(td, "phala_sgx_quote.dat"))
	if err != nil {
		t.Fatal(err)
	}
	// Change one base64 character of the embedded root's signature: the
	// last "-----END CERTIFICATE-----" closes the root; a character some
	// lines before it lies in the signature.
	end := bytes.LastIndex(raw, []byte("-----END CERTIFICATE-----"))
	pos := end - 10
	for raw[pos] == '\n' || raw[pos] == '=' {
		pos--
	}
	if raw[pos] == 'A' {
		raw[pos] = 'B'
	} else {
		raw[pos] = 'A'
	}
	bad := filepath.Join(t.TempDir(), "bad-root.dat")
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	col := filepath.Join(td, "phala_sgx_quote_collateral.json")
	code, out, errOut := runCLI(t, "attest", "verify", bad, "--collateral", col, "--at", "2025-07-01T00:00:00Z", "--accept-tcb", "ConfigurationAndSWHardeningNeeded")
	if code != exitRejected || !strings.Contains(errOut, "not the pinned Intel SGX Root CA") || !strings.Contains(out, "pck chain                  FAILED") {
		t.Errorf("corrupted root: exit %d\n%s\n%s", code, out, errOut)
	}
}
