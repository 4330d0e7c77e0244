// Package testenv is the set-up the test binaries of several packages
// share: a temporary directory for the run that holds whatever the tests
// build once (enclave images, the cloister command) and the user
// configuration directory of the commands they run.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SetupTimeout bounds the setup function of Run (image builds included).
const SetupTimeout = 5 * time.Minute

// Run is a TestMain body. It makes a temporary directory named after
// prefix and points XDG_CONFIG_HOME into it, so that a cloister command
// the tests run keeps its simulation keys there, not in the user's (the
// libraries never look there: tests hand them an attest.SimulationRoot).
// Then it calls setup with
// the directory, runs the tests, removes the directory and returns the
// exit code. A setup error is printed and fails the run.
func Run(m *testing.M, prefix string, setup func(ctx context.Context, dir string) error) int {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	ctx, cancel := context.WithTimeout(context.Background(), SetupTimeout)
	err = setup(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
