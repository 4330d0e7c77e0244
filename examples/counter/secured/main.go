// Command secured is the counter of examples/counter/enclave with the
// secured-address layer (package trusted/secured): run with a manifest
// service (cloister node --enclave ...,service=counter), it joins the
// coordinator at start-up, and the layer opens the client-session messages
// of addresses open to clients before the counter's handlers (unchanged)
// see the plain user name. Build it with
//
//	cloister enclave build ./examples/counter/secured -o counter.img
package main

import (
	"github.com/cloister-dev/cloister/examples/counter/count"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
)

func main() {
	app := trusted.New(trusted.Options{Workers: 8, Layer: secured.Layer(secured.Options{})})
	count.Register(app)
	app.Main()
}
