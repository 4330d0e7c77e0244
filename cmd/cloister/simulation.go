package main

import (
	"path/filepath"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/attest"
)

// simulationDir is where the command keeps this machine's simulation root
// (attest.SimPlatformKeyFile and attest.SimSealSecretFile): the cloister
// directory of the user's configuration directory ($XDG_CONFIG_HOME or
// ~/.config on Linux), as it always has, so existing keys and the
// simulated sealed state they open keep working; the application layer
// keeps its default root there too. Libraries below them are handed the
// root.
func simulationDir() (string, error) { return application.DefaultSimulationDir() }

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
