// Command testimage is the enclave image the enclave package's tests and
// benchmarks run (see package testapp). CLOISTER_WORKERS (what a node's
// EnclaveConfig.Workers sets) gives the number of handler workers (default 8).
package main

import (
	"os"
	"strconv"

	"github.com/cloister-dev/cloister/internal/testapp"
)

func main() {
	workers := 8
	if n, err := strconv.Atoi(os.Getenv("CLOISTER_WORKERS")); err == nil && n > 0 {
		workers = n
	}
	testapp.New(workers).Main()
}
