package main

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/secure"
)

// TestVersionVerb runs 'cloister version' in process: it names the module
// and the protocol versions this build speaks, as text and as JSON.
func TestVersionVerb(t *testing.T) {
	code, out, errOut := runCLI(t, "version")
	if code != exitOK {
		t.Fatalf("version: exit %d %q", code, errOut)
	}
	for _, want := range []string{
		"cloister ",
		"module             github.com/cloister-dev/cloister\n",
		fmt.Sprintf("boundary protocol  %d\n", boundary.ProtocolVersion),
		fmt.Sprintf("client sessions    %d\n", secure.SessionVersion),
		fmt.Sprintf("secured envelopes  %d\n", secure.Version),
		fmt.Sprintf("sealed blobs       %d\n", seal.Version),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = runCLI(t, "version", "--json")
	if code != exitOK {
		t.Fatalf("version --json: exit %d %q", code, errOut)
	}
	var r versionReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	if r.Boundary != boundary.ProtocolVersion || r.Sessions != secure.SessionVersion || r.Version == "" || r.Go == "" {
		t.Fatalf("version --json: %+v", r)
	}

	if code, _, errOut = runCLI(t, "version", "extra"); code != exitUsage || !strings.Contains(errOut, "no arguments") {
		t.Fatalf("version with an argument: exit %d %q", code, errOut)
	}
}

// A development build from a checkout reports "(devel)", the revision and
// whether the tree was modified; a released module reports its version; a
// link-time version wins over both.
func TestVersionReportFromBuildInfo(t *testing.T) {
	devel := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/cloister-dev/cloister", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-04T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	r := newVersionReport(devel, "")
	if r.Version != "(devel)" || r.Revision != "0123456789abcdef0123456789abcdef01234567" || !r.Modified || r.Go != "go1.26.0" {
		t.Fatalf("devel build: %+v", r)
	}
	if first := strings.SplitN(r.text(), "\n", 2)[0]; first != "cloister (devel) 0123456789abcdef0123456789abcdef01234567 (modified)" {
		t.Fatalf("devel first line %q", first)
	}

	released := &debug.BuildInfo{Main: debug.Module{Path: "github.com/cloister-dev/cloister", Version: "v0.3.0"}}
	r = newVersionReport(released, "")
	if r.Version != "v0.3.0" || r.Revision != "" || r.Modified {
		t.Fatalf("released build: %+v", r)
	}
	if first := strings.SplitN(r.text(), "\n", 2)[0]; first != "cloister v0.3.0" {
		t.Fatalf("released first line %q", first)
	}

	if r = newVersionReport(released, "v9.9.9"); r.Version != "v9.9.9" || !r.LinkTime {
		t.Fatalf("link-time version: %+v", r)
	}
	if r = newVersionReport(nil, ""); r.Version != "(devel)" || r.Boundary != boundary.ProtocolVersion {
		t.Fatalf("no build info: %+v", r)
	}
}
