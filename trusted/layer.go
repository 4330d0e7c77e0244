package trusted

import (
	"context"
	"fmt"

	"github.com/cloister-dev/cloister/wire"
)

// A Layer stands between the boundary and an App's handlers: it may refuse
// a delivery or change what its handler sees, seal the handler's reply, and
// check and transform what the enclave sends. It is the opt-in part of the
// SDK: package trusted/secured provides the secured-address layer (joining
// the coordinator, secured envelopes, client sessions, key epochs); an
// image without secured addresses sets no layer and does not link it.
//
// The runtime makes one Layer per Serve, once Init arrived (Options.Layer),
// and calls it from many goroutines at once.
type Layer interface {
	// Start runs after Init and before OnInit and Ready, with a context
	// that ends when the instance stops. An error ends Serve, reported to
	// the host as Fatal.
	Start(ctx context.Context) error
	// Handlers are the layer's own handlers (such as the coordinator's
	// epoch notices), registered unless the image registered the address;
	// the layer does not Open their deliveries. Called once, before Start.
	Handlers() map[string]Handler
	// Serves returns the addresses to announce in Ready, given those the
	// image registered (the layer's own are not among them).
	Serves(registered []string) []string
	// Open runs before the handler of every delivery to an address the
	// image registered, on the worker that will run it. It may replace
	// d.Headers and d.Body (the handler sees the new ones) and return what
	// it needs to answer the delivery (nil if nothing); a *Refusal keeps
	// the handler from running.
	Open(d *Delivery) (Opened, error)
	// Outgoing runs before a Send, Publish or Request leaves the enclave
	// and returns what to send instead (or an error that refuses it). For
	// a request it may return a function that turns the reply's body into
	// what Request returns.
	Outgoing(address string, kind wire.Kind, headers map[string]string, body []byte) (map[string]string, []byte, OpenReply, error)
	// Health is the detail of the instance's health status ("" if none).
	Health() string
	// Stop runs on Shutdown once the handlers have drained, before
	// Stopped, while protected storage still works.
	Stop(ctx context.Context) error
}

// OpenReply turns the body of a reply to a request a Layer transformed into
// what Request returns.
type OpenReply func(body []byte) (*Response, error)

// Delivery is a message as a Layer sees it before the handler runs.
type Delivery struct {
	Address      string
	Kind         wire.Kind // send, publish or request
	ExpectsReply bool
	Headers      map[string]string
	Body         []byte
}

// Opened is what a Layer keeps of a delivery it opened, to answer it.
type Opened interface {
	// SealReply turns the handler's reply into what is sent to the host.
	SealReply(headers map[string]string, body []byte) (map[string]string, []byte, error)
	// Settle says how the delivery ended: ok when a request was answered
	// with Reply or a one-way handler returned; not ok on Fail or panic.
	Settle(ok bool)
}

// Refusal is a Layer's refusal of a delivery: a request is failed with
// Code and Message (a recipient failure); an acknowledged send or publish
// is handed back for redelivery when Retry is set, and acknowledged (so
// not redelivered) otherwise.
type Refusal struct {
	Code    int
	Message string
	Retry   bool
}

// Error returns the message and the code.
func (r *Refusal) Error() string { return fmt.Sprintf("refused (code %d): %s", r.Code, r.Message) }

// Opened returns what the layer kept of the delivery (nil if nothing).
func (c *Call) Opened() Opened { return c.opened }
