// Command enclave is the trusted half of the counter example: an enclave
// image that keeps one counter per user in protected storage (package
// count). Build it with
//
//	cloister enclave build ./examples/counter/enclave -o counter.img
//
// It is the minimal image: it links the trusted core only — no bus, no
// network stack, no secured-address layer — and the budget test of
// internal/leancheck holds it to its budget of code lines of our own.
package main

import (
	"github.com/cloister-dev/cloister/examples/counter/count"
	"github.com/cloister-dev/cloister/trusted"
)

func main() {
	app := trusted.New(trusted.Options{Workers: 8})
	count.Register(app)
	app.Main()
}
