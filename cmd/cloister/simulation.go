package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/attest"
)

// simulationDir is where the command keeps this machine's simulation root
// (attest.SimPlatformKeyFile and attest.SimSealSecretFile): the cloister
// directory of the user's configuration directory ($XDG_CONFIG_HOME or
// ~/.config on Linux), as it always has, so existing keys and the
// simulated sealed state they open keep working. The command is the only
// part of Cloister that looks there; libraries are handed the root.
func simulationDir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("locating the simulation keys: %w", err)
	}
	return filepath.Join(dir, "cloister"), nil
}

// simulationRoot loads this machine's simulation root, creating it on first
// use.
func simulationRoot() (*attest.SimulationRoot, error) {
	dir, err := simulationDir()
	if err != nil {
		return nil, err
	}
	return attest.LoadOrCreateSimulationRoot(dir)
}

// simPlatformKeyPath returns path, or this machine's platform key file when
// path is empty.
func simPlatformKeyPath(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	dir, err := simulationDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, attest.SimPlatformKeyFile), nil
}
