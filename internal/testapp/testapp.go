// Package testapp is the trusted application of the enclave package's test
// image: one handler per feature of the trusted SDK. The tests run it in
// process (inproc backend) and as the testimage child process.
package testapp

import (
	"context"
	"crypto/sha256"
	"os"
	"runtime"
	"strconv"

	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/wire"
)

// New returns the test application with workers handler workers.
func New(workers int) *trusted.App { return NewOptions(trusted.Options{Workers: workers}) }

// EnvKillable names the environment variable that arms test.incr's "die"
// header (set it only for child-process images: the handler kills its own
// process).
const EnvKillable = "CLOISTER_TEST_KILLABLE"

// NewOptions returns the test application with opts.
func NewOptions(opts trusted.Options) *trusted.App {
	app := trusted.New(opts)
	app.HandleFunc("test.empty", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, nil)
	})
	app.HandleFunc("test.echo", func(ctx context.Context, c *trusted.Call) {
		if c.ExpectsReply() {
			c.Reply(c.Headers(), c.Body())
		}
	})
	app.HandleFunc("test.json", func(ctx context.Context, c *trusted.Call) {
		c.Reply(map[string]string{wire.HeaderCodec: wire.CodecJSON}, []byte(`{"n":42}`))
	})
	app.HandleFunc("test.fail", func(ctx context.Context, c *trusted.Call) {
		c.Fail(418, "I am a teapot")
	})
	app.HandleFunc("test.panic", func(ctx context.Context, c *trusted.Call) {
		panic("boom")
	})
	app.HandleFunc("test.block", func(ctx context.Context, c *trusted.Call) {
		<-ctx.Done() // never answers while the enclave lives
	})
	app.HandleFunc("test.pid", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, []byte(strconv.Itoa(os.Getpid())))
	})
	app.HandleFunc("test.procs", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, []byte(strconv.Itoa(runtime.GOMAXPROCS(0))))
	})
	app.HandleFunc("test.put", func(ctx context.Context, c *trusted.Call) {
		if err := c.Put(ctx, c.Header("key"), c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte("ok"))
	})
	app.HandleFunc("test.get", func(ctx context.Context, c *trusted.Call) {
		v, found, err := c.Get(ctx, c.Header("key"))
		switch {
		case err != nil:
			c.Fail(500, err.Error())
		case !found:
			c.Fail(404, "no such key")
		default:
			c.Reply(nil, v)
		}
	})
	app.HandleFunc("test.incr", func(ctx context.Context, c *trusted.Call) {
		// A stateful handler: one Get and one Put per request. With the
		// header die (and EnvKillable set) the process is killed between the
		// Put and the reply.
		v, _, err := c.Get(ctx, c.Header("key"))
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		n, _ := strconv.ParseUint(string(v), 10, 64)
		next := []byte(strconv.FormatUint(n+1, 10))
		if err := c.Put(ctx, c.Header("key"), next); err != nil {
			c.Fail(500, err.Error())
			return
		}
		if c.Header("die") != "" && os.Getenv(EnvKillable) == "1" {
			p, _ := os.FindProcess(os.Getpid())
			p.Kill()
			select {}
		}
		c.Reply(nil, next)
	})
	app.HandleFunc("test.request", func(ctx context.Context, c *trusted.Call) {
		r, err := c.Request(ctx, c.Header("to"), nil, c.Body(), 0)
		if err != nil {
			c.Fail(502, err.Error())
			return
		}
		c.Reply(nil, append([]byte("got: "), r.Body...))
	})
	app.HandleFunc("test.send", func(ctx context.Context, c *trusted.Call) {
		if err := c.Send(ctx, c.Header("to"), map[string]string{"from": "enclave"}, c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		if err := c.Publish(ctx, c.Header("to")+".all", nil, c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte("sent"))
	})
	app.HandleFunc("test.work", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, Work(c.Body()))
	})
	app.HandleFunc("test.log", func(ctx context.Context, c *trusted.Call) {
		c.Logger().Info("hello from inside", "marker", string(c.Body()))
		c.Reply(nil, nil)
	})
	app.HandleFunc("test.evidence", func(ctx context.Context, c *trusted.Call) {
		var rd [64]byte
		h := sha256.Sum256(c.Body())
		copy(rd[:], h[:])
		ev, err := c.Evidence(ctx, rd)
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(map[string]string{"type": ev.Type}, ev.Quote)
	})
	app.HandleFunc("other.secret", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, []byte("should not be reachable"))
	})
	return app
}

// WorkRounds is how many times Work hashes.
const WorkRounds = 16

// Work is a handler's stand-in for real work: WorkRounds chained SHA-256
// hashes of body (a few µs for 1 KiB). Benchmarks run the same work in a
// regular service to compare like with like.
func Work(body []byte) []byte {
	h := sha256.Sum256(body)
	for range WorkRounds - 1 {
		h = sha256.Sum256(append(h[:], body...))
	}
	return h[:]
}
