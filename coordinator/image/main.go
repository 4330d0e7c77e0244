// Command image is the coordinator's enclave image: the coordinator
// (package coordinator) served by the trusted runtime. Build it with
//
//	cloister enclave build -o coordinator.img github.com/cloister-dev/cloister/coordinator/image
//
// or let 'cloister coordinator' build it on first use. It imports neither
// the bus, the cluster, the node, the host side, NATS nor net/http.
package main

import (
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/trusted"
)

func main() {
	coordinator.NewApp(coordinator.Options{}, trusted.Options{}).Main()
}
