// Package count is the counter example's trusted handlers: one counter per
// user in protected storage.
//
//	counter.inc  body: user name  → reply: the user's new count (JSON number)
//	counter.get  body: user name  → reply: the user's count (JSON number)
//
// The counts are sealed inside the enclave before the host stores them, so
// the host sees neither the counts nor the user names. Two images register
// them: examples/counter/enclave, the minimal image (the trusted core
// only), and examples/counter/secured, which adds the secured-address
// layer to join a coordinator.
package count

import (
	"context"
	"strconv"
	"sync"

	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/wire"
)

// replyJSON marks a reply body as JSON, so the caller can Decode it. A
// fresh map each time: headers handed to the runtime are not shared state.
func replyJSON() map[string]string { return map[string]string{wire.HeaderCodec: wire.CodecJSON} }

// Register registers the counter's handlers on app.
func Register(app *trusted.App) {
	var mu sync.Mutex // one read-modify-write at a time in this instance
	load := func(ctx context.Context, c *trusted.Call, user string) (int, bool) {
		v, found, err := c.Get(ctx, "count/"+user)
		if err != nil {
			c.Fail(500, "protected storage: "+err.Error())
			return 0, false
		}
		if !found {
			return 0, true
		}
		n, err := strconv.Atoi(string(v))
		if err != nil {
			c.Fail(500, "corrupt counter")
			return 0, false
		}
		return n, true
	}
	user := func(c *trusted.Call) (string, bool) {
		u := string(c.Body())
		if u == "" || len(u) > 256 {
			c.Fail(400, "send the user name as the body (1 to 256 bytes)")
			return "", false
		}
		return u, true
	}

	app.HandleFunc("counter.inc", func(ctx context.Context, c *trusted.Call) {
		u, ok := user(c)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		n, ok := load(ctx, c, u)
		if !ok {
			return
		}
		n++
		if err := c.Put(ctx, "count/"+u, []byte(strconv.Itoa(n))); err != nil {
			c.Fail(500, "protected storage: "+err.Error())
			return
		}
		c.Logger().Debug("counted") // the user and the count stay inside
		c.Reply(replyJSON(), []byte(strconv.Itoa(n)))
	})
	app.HandleFunc("counter.get", func(ctx context.Context, c *trusted.Call) {
		u, ok := user(c)
		if !ok {
			return
		}
		mu.Lock()
		n, ok := load(ctx, c, u)
		mu.Unlock()
		if ok {
			c.Reply(replyJSON(), []byte(strconv.Itoa(n)))
		}
	})
}
