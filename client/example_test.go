package client_test

import (
	"context"
	"errors"
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

// A client pinned to the manifest it was installed with follows the
// owner's signed updates, and refuses a coordinator whose manifest is
// older than version 3 (one whose state the host rolled back).
func Example_minManifestVersion() {
	ctx := context.Background()
	var b *bus.Bus // a bus on the system
	installed, err := manifestyaml.ParseFile("app-v1.yaml")
	if err != nil {
		log.Fatal(err)
	}
	policy := attest.Policy{MREnclaves: [][32]byte{{ /* the coordinator image's measurement */ }}}
	c, err := client.Connect(ctx, b, client.Options{CoordinatorPolicy: policy, ManifestHash: installed.Hash(), MinManifestVersion: 3})
	switch {
	case errors.Is(err, client.ErrManifestTooOld):
		log.Fatal("the coordinator serves an older manifest than version 3: ", err)
	case errors.Is(err, client.ErrHistory):
		log.Fatal("a signed update did not verify: ", err) // *client.HistoryError names the entry
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("pinned %x (version %d) after %d signed update(s)\n", c.ManifestHash(), c.ManifestVersion(), c.FollowedUpdates())
}
