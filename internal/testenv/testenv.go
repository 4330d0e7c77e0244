// Package testenv is the set-up the test binaries of several packages
// share: a temporary directory for the run that holds the run's simulated
// platform keys and whatever the tests build once (enclave images, the
// cloister command).
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
// prefix and points XDG_CONFIG_HOME into it, so that the simulation keys
// (platform secret, quote signing key) of this run live there, for the
// test process and the enclaves it starts alike. Then it calls setup with
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
