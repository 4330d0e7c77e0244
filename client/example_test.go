package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
)

// A sensor verifies the coordinator once, then sends readings that only
// the analytics enclave can read, and asks it a question.
func Example() {
	ctx := context.Background()
	var b *bus.Bus // a bus on the system, e.g. over package cluster
	m, err := manifestyaml.ParseFile("app.yaml")
	if err != nil {
		log.Fatal(err)
	}
	coordinatorImage, err := attest.ParsePolicy([]byte(`{"mrenclaves": ["0e62ea69de8870b41f252bcfbb8b2839b7b9ab839d9f52cfc1085563b22b14f2"]}`))
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Connect(ctx, b, client.Options{CoordinatorPolicy: *coordinatorImage, ManifestHash: m.Hash()})
	if err != nil {
		log.Fatal(err) // *client.UntrustedError names the check that failed
	}
	if err := c.Send(ctx, "water.readings", "analytics", []byte(`{"meter":7,"m3":12.5}`)); err != nil {
		log.Fatal(err)
	}
	answer, err := c.Request(ctx, "water.stats.query", "analytics", []byte(`{"meter":7}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", answer)
}
