package manifestyaml_test

import (
	"fmt"

	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
)

func ExampleParse() {
	m, err := manifestyaml.Parse([]byte(`
version: 1
services:
  analytics:
    identities:
      - mrenclave: e389fb35acd45ceee94a6c0064f987639a4338f698615da952955dabbe65e0a2
  ingest: {}
addresses:
  water.analytics:
    durable: true
    consume: [analytics]
    send: [ingest]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.CanSend("ingest", "water.analytics"), m.CanConsume("ingest", "water.analytics"))
	fmt.Println(len(m.HashHex()))
	// Output:
	// true false
	// 64
}

func ExampleParse_errors() {
	_, err := manifestyaml.Parse([]byte(`
version: 1
services:
  ingest: {}
addresses:
  water.stats:
    secured: true
    consume: [ingest, nobody]
`))
	for _, e := range manifest.FieldErrors(err) {
		fmt.Println(e)
	}
	// Output:
	// addresses."water.stats".consume[0] (line 8): service "ingest" has no identities (it is regular), so it cannot consume on a secured address
	// addresses."water.stats".consume[1] (line 8): unknown service "nobody"
}
