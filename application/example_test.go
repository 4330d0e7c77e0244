package application_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/node"
)

// greeter is a regular service written in Go.
type greeter struct{}

func (greeter) Start(ctx context.Context, inst *node.Instance) error {
	_, err := inst.Consumer("greet.hello", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		m.Reply("hello, " + string(m.Body()))
	}))
	return err
}

func (greeter) Stop(ctx context.Context) error { return nil }

// Start runs an application with a Go service the program registers, as
// Vert.x deploys a verticle; its durable address needs no sender to ask
// for durability.
func ExampleStart() {
	cfg, err := application.ParseConfig([]byte(`
name: greetings
program: .
services:
  greeter: {}
addresses:
  greet.hello: {consume: [greeter]}
  greet.log:   {durable: true, consume: [greeter]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	a, err := application.Start(ctx, cfg, application.GoService{Name: "greeter", New: func() node.Service { return greeter{} }})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Stop(ctx)
	m, err := a.Bus().Request(ctx, "greet.hello", []byte("ada"), bus.Timeout(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	var reply string
	_ = m.Decode(&reply)
	fmt.Println(reply)
	// Output: hello, ada
}

// ParseConfig reports a bad description with the field and its line.
func ExampleParseConfig() {
	_, err := application.ParseConfig([]byte(`
name: shop
images:
  vault: {package: ./vault, backend: sgx2}
`))
	fmt.Println(err)
	// Output: images.vault.backend (line 4): "sgx2" (want process or gramine)
}
