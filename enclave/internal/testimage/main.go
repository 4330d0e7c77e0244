// Command testimage is the enclave image the enclave package's tests and
// benchmarks run (see package testapp). CLOISTER_WORKERS (what a node's
// EnclaveConfig.Workers sets) gives the number of handler workers (default 8);
// CLOISTER_TEST_SYNC_STORE=1 makes protected storage wait for the host.
package main

import (
	"os"
	"strconv"

	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/trusted"
)

// EnvSyncStore set to 1 makes protected storage wait for the host
// (trusted.Options.SyncStore), to compare against.
const EnvSyncStore = "CLOISTER_TEST_SYNC_STORE"

func main() {
	workers := 8
	if n, err := strconv.Atoi(os.Getenv("CLOISTER_WORKERS")); err == nil && n > 0 {
		workers = n
	}
	testapp.NewOptions(trusted.Options{Workers: workers, SyncStore: os.Getenv(EnvSyncStore) == "1"}).Main()
}
