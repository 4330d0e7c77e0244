package application_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
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

// PlanRecovery turns the replicas' statuses, as 'cloister coordinator
// replicas' shows them, into the statement the owner signs after a lost
// quorum: every replica that needs recovery, and per subject the highest
// version a replica read from its own storage.
func ExamplePlanRecovery() {
	hash := strings.Repeat("ab", 32)
	digest := func(b byte) []byte { return bytes.Repeat([]byte{b}, provision.DigestSize) }
	statuses := []application.SlotStatus{
		{Slot: 0, Status: &provision.ReplicaStatus{Slot: 0, Replicas: 3, State: provision.ReplicaLive, ManifestHash: hash}},
		{Slot: 1, Status: &provision.ReplicaStatus{Slot: 1, Replicas: 3, State: provision.ReplicaNeedsRecovery, ManifestHash: hash,
			RecoveryNonce: bytes.Repeat([]byte{1}, provision.NonceSize),
			Local:         []provision.Register{{Subject: "coordinator", Counter: 4, Digest: digest(1)}, {Subject: "service/vault/0", Counter: 9, Digest: digest(2)}}}},
		{Slot: 2, Status: &provision.ReplicaStatus{Slot: 2, Replicas: 3, State: provision.ReplicaNeedsRecovery, ManifestHash: hash,
			RecoveryNonce: bytes.Repeat([]byte{2}, provision.NonceSize),
			Local:         []provision.Register{{Subject: "coordinator", Counter: 4, Digest: digest(1)}, {Subject: "service/vault/0", Counter: 7, Digest: digest(3)}}}},
	}
	st, err := application.PlanRecovery(statuses, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d replicas to recover\n", len(st.Nonces))
	for _, r := range st.Registers {
		fmt.Printf("%s at version %d\n", r.Subject, r.Counter)
	}
	// The owner then signs it (application.SignRecovery, with the key
	// manifest.ParseSigningKey reads) and hands it to each replica
	// (application.SendRecovery); application.Recover does all of it.
	// Output:
	// 2 replicas to recover
	// coordinator at version 4
	// service/vault/0 at version 9
}
