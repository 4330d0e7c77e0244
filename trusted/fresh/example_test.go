package fresh_test

import (
	"context"
	"errors"

	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
)

// An image that handles its grant itself starts the tracker before it
// uses protected storage; reads of rolled-back state then fail with
// trusted.ErrRolledBack. (The secured-address layer does this on its own
// when the grant carries freshness.)
func ExampleStart() {
	var registry fresh.Registry // e.g. a *secured.Registry built from the grant
	app := trusted.New(trusted.Options{
		OnInit: func(ctx context.Context, rt *trusted.Runtime) error {
			_, err := fresh.Start(ctx, rt, registry, fresh.Options{Subject: "service/meter/0", Interval: 0})
			return err // older local state than registered: the instance does not start
		},
	})
	app.HandleFunc("meter.total", func(ctx context.Context, c *trusted.Call) {
		v, _, err := c.Get(ctx, "total")
		if errors.Is(err, trusted.ErrRolledBack) {
			c.Fail(503, "state rolled back by the host")
			return
		}
		c.Reply(nil, v) // leaves once the writes before it are registered
	})
	_ = app // app.Main() in the image's main
}
