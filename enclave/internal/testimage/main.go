// Command testimage is the enclave image the enclave package's tests and
// benchmarks run (see package testapp). The host's Init (what a node's
// EnclaveConfig.Workers sets) gives the number of handler workers (default
// 8); CLOISTER_TEST_SYNC_STORE=1 makes protected storage wait for the host.
//
// With TESTIMAGE_PIPES_ONLY=1 it serves its boundary descriptors (3 and 4)
// itself, as an image built before the shared-memory boundary would: it
// ignores the region the host offers, so the host must stay on the pipes.
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/cloister-dev/cloister/boundary/shm"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/trusted"
)

// EnvSyncStore set to 1 makes protected storage wait for the host
// (trusted.Options.SyncStore), to compare against.
const EnvSyncStore = "CLOISTER_TEST_SYNC_STORE"

func main() {
	app := testapp.NewOptions(trusted.Options{SyncStore: os.Getenv(EnvSyncStore) == "1", SharedMemory: shm.Adopt})
	if os.Getenv("TESTIMAGE_PIPES_ONLY") == "1" {
		syscall.SetNonblock(3, true)
		syscall.SetNonblock(4, true)
		if err := app.Serve(context.Background(), os.NewFile(3, "ecall"), os.NewFile(4, "ocall")); err != nil {
			fmt.Fprintln(os.Stderr, "testimage:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	app.Main()
}
