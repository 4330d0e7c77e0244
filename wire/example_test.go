package wire_test

import (
	"fmt"

	"github.com/cloister-dev/cloister/wire"
)

func ExampleValidateAddress() {
	fmt.Println(wire.ValidateAddress("water.readings"))
	fmt.Println(wire.ValidateAddress("water.*"))
	// Output:
	// <nil>
	// invalid address "water.*": wildcards are not allowed: character '*' at byte 6 (an address is exact)
}

func ExampleParseFailure() {
	f, ok := wire.ParseFailure("no-handlers")
	fmt.Println(f == wire.FailureNoHandlers, ok)
	// Output: true true
}
