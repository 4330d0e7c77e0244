package secured_test

import (
	"context"
	"fmt"

	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
)

// An image opts in to the secured-address layer in its options; its
// handlers see plaintext and, for client-session messages, the client.
func ExampleLayer() {
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{})})
	app.HandleFunc("meter.readings", func(ctx context.Context, c *trusted.Call) {
		client, ok := secured.Client(c)
		if !ok {
			c.Fail(403, "client-session messages only")
			return
		}
		c.Logger().Info("reading", "client", client) // names, never payloads
		c.Reply(nil, []byte("ok"))
	})
	fmt.Println(app.Addresses())
	// Output: [meter.readings]
}
