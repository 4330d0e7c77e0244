package trusted_test

import (
	"context"
	"strconv"

	"github.com/cloister-dev/cloister/trusted"
)

// An enclave image that keeps a counter per user in protected storage.
func Example() {
	app := trusted.New(trusted.Options{Workers: 8})
	app.HandleFunc("counter.inc", func(ctx context.Context, c *trusted.Call) {
		user := c.Header("user")
		if user == "" {
			c.Fail(400, "missing user header")
			return
		}
		v, _, err := c.Get(ctx, user)
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		n, _ := strconv.Atoi(string(v))
		next := []byte(strconv.Itoa(n + 1))
		if err := c.Put(ctx, user, next); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Logger().Info("counted", "n", n+1) // the user name stays inside
		c.Reply(nil, next)
	})
	// In the image's func main:
	//	app.Main()
	_ = app
}
