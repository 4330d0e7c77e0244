package attest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testdataDir returns ../shared/testdata relative to the module root, or
// skips the test when it is absent.
func testdataDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Skip("module root not found")
		}
		dir = parent
	}
	td := filepath.Join(dir, "..", "shared", "testdata")
	if _, err := os.Stat(td); err != nil {
		tb.Skipf("shared test data absent: %v", err)
	}
	return td
}

func readTestdata(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(testdataDir(tb), rel))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

type realQuote struct {
	file       string
	mrenclave  string
	mrsigner   string
	debug      bool
	reportData string // prefix; the rest is zero
}

var realQuotes = []realQuote{
	{"sgx/mobilecoin_hw_quote.dat", "1dd0df84810e53e26b2b167dfe0f97cc4364085fe0bd41d5e18a759c21d5c189", "d412a4f07ef83892a5915fb2ab584be31e186e5a4f95ab5f6950fd4eb8694d7b", true, ""},
	{"sgx/phala_sgx_quote.dat", "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb", "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6", false, "Hello, world!"},
	{"sgx/trustee_occlum_quote.dat", "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68", "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e", true, "test"},
	{"sgx/automata_quotev3.dat", "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd", "8f2dbc0f9c5d3378d596974b2deed1f93223cc49242899f83809bcc92546132c", false, ""},
}

var (
	phalaAt    = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	automataAt = time.Date(2025, 8, 20, 0, 0, 0, 0, time.UTC)
)
