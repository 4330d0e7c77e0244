package attest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func phalaClaims() *Claims {
	c := &Claims{
		Type:      EvidenceSGXDCAP,
		MREnclave: [32]byte{0x33, 0xd8},
		MRSigner:  [32]byte{0x81, 0x5f},
		ProductID: 0,
		SVN:       3,
		TCBStatus: TCBConfigurationAndSWHardeningNeeded,
	}
	copy(c.ReportData[:], "Hello, world!")
	return c
}

func TestPolicyRules(t *testing.T) {
	c := phalaClaims()
	mrs := c.MRSigner
	otherMR := [32]byte{9}
	rd := c.ReportData
	wrongRD := [64]byte{1}
	cases := []struct {
		name string
		p    Policy
		mod  func(*Claims)
		rule string
	}{
		{"no identity", Policy{AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, nil, RuleIdentity},
		{"default TCB UpToDate only", Policy{MREnclaves: [][32]byte{c.MREnclave}}, nil, RuleTCB},
		{"TCB widened", Policy{MREnclaves: [][32]byte{otherMR, c.MREnclave}, AcceptedTCB: []TCBStatus{TCBSWHardeningNeeded, TCBConfigurationAndSWHardeningNeeded}}, nil, ""},
		{"unknown TCB", Policy{MREnclaves: [][32]byte{c.MREnclave}, AcceptedTCB: []TCBStatus{TCBUpToDate}}, func(c *Claims) { c.TCBStatus = TCBStatusUnknown }, RuleTCB},
		{"mrenclave", Policy{MREnclaves: [][32]byte{otherMR}}, nil, RuleMREnclave},
		{"mrsigner ok", Policy{MRSigner: &mrs, MinSVN: 3, AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, nil, ""},
		{"mrsigner wrong", Policy{MRSigner: &otherMR}, nil, RuleMRSigner},
		{"product", Policy{MRSigner: &mrs, ProductID: 1}, nil, RuleProductID},
		{"svn", Policy{MRSigner: &mrs, MinSVN: 4}, nil, RuleMinSVN},
		{"debug refused", Policy{MRSigner: &mrs, AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, func(c *Claims) { c.Debug = true }, RuleDebug},
		{"debug allowed", Policy{MRSigner: &mrs, AllowDebug: true, AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, func(c *Claims) { c.Debug = true }, ""},
		{"report data ok", Policy{MRSigner: &mrs, ReportData: &rd, AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, nil, ""},
		{"report data wrong", Policy{MRSigner: &mrs, ReportData: &wrongRD, AcceptedTCB: []TCBStatus{TCBConfigurationAndSWHardeningNeeded}}, nil, RuleReportData},
		{"simulation refused", Policy{MRSigner: &mrs}, func(c *Claims) { c.Type = EvidenceSimulated }, RuleSimulation},
		{"simulation allowed, no TCB", Policy{MRSigner: &mrs, AllowSimulation: true}, func(c *Claims) { c.Type = EvidenceSimulated; c.TCBStatus = "" }, ""},
		{"revoked", Policy{MRSigner: &mrs, AcceptedTCB: []TCBStatus{TCBUpToDate, TCBOutOfDate}}, func(c *Claims) { c.TCBStatus = TCBRevoked }, RuleTCB},
	}
	for _, tc := range cases {
		cl := phalaClaims()
		if tc.mod != nil {
			tc.mod(cl)
		}
		err := tc.p.Check(cl)
		if tc.rule == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Rule != tc.rule {
			t.Errorf("%s: %v, want rule %q", tc.name, err, tc.rule)
		}
	}
}

func TestPolicyJSON(t *testing.T) {
	in := `{
	  "mrenclaves": ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"],
	  "mrsigner": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
	  "product_id": 0, "min_svn": 0, "allow_debug": false,
	  "accepted_tcb": ["UpToDate", "ConfigurationAndSWHardeningNeeded"],
	  "report_data": "48656c6c6f2c20776f726c6421000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	}`
	p, err := ParsePolicy([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.MREnclaves) != 1 || p.MRSigner == nil || p.ReportData == nil || len(p.AcceptedTCB) != 2 || p.AllowSimulation {
		t.Fatalf("parsed %+v", p)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePolicy(out)
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := json.Marshal(p2)
	if string(out) != string(out2) {
		t.Errorf("round trip changed: %s vs %s", out, out2)
	}
	for name, bad := range map[string]string{
		"unknown field": `{"mrenclave": "00"}`,
		"short hex":     `{"mrsigner": "abcd"}`,
		"bad hex":       `{"mrenclaves": ["zz"]}`,
		"bad tcb":       `{"accepted_tcb": ["Fine"]}`,
		"trailing":      `{} {}`,
	} {
		if _, err := ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		} else if !strings.Contains(err.Error(), "policy") {
			t.Errorf("%s: error %q does not say policy", name, err)
		}
	}
}
