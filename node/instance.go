package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cloister-dev/cloister/bus"
)

// Instance is one running instance of a deployed service: its handle on
// the bus and the node. Consumers registered through it run on the
// instance's event loop (or the deployment's worker pool) and are removed
// when the deployment is undeployed.
type Instance struct {
	node        *Node
	dep         *deployment
	index       int
	service     Service
	exec        *pool
	config      json.RawMessage
	logger      *slog.Logger
	startFailed bool

	mu        sync.Mutex
	consumers []*bus.Consumer
}

// DeploymentID is the ID Deploy returned.
func (i *Instance) DeploymentID() string { return i.dep.id }

// Name is the deployment's name.
func (i *Instance) Name() string { return i.dep.name }

// Index is the instance's number within its deployment, from 0.
func (i *Instance) Index() int { return i.index }

// Logger returns a logger tagged with the deployment and instance.
func (i *Instance) Logger() *slog.Logger { return i.logger }

// Bus returns the node's bus, for sending, publishing and requesting.
// Register consumers with Instance.Consumer so that they run on the
// instance's loop and leave with the deployment.
func (i *Instance) Bus() *bus.Bus { return i.node.bus }

// Config decodes the deployment's configuration into v. With no
// configuration it leaves v unchanged.
func (i *Instance) Config(v any) error {
	if len(i.config) == 0 {
		return nil
	}
	if err := json.Unmarshal(i.config, v); err != nil {
		return fmt.Errorf("node: %s: config: %w", i.dep.name, err)
	}
	return nil
}

// Execute runs task on the instance's event loop (or the worker pool), as
// a handler would run: use it to touch the instance's state from another
// goroutine, such as a timer's.
func (i *Instance) Execute(task func()) { i.exec.Execute(task) }

// Consumer registers h at address for this instance.
func (i *Instance) Consumer(address string, h bus.Handler, opts ...bus.ConsumerOption) (*bus.Consumer, error) {
	return i.register(address, false, h, opts)
}

// LocalConsumer registers h at address, reachable only from this node.
func (i *Instance) LocalConsumer(address string, h bus.Handler, opts ...bus.ConsumerOption) (*bus.Consumer, error) {
	return i.register(address, true, h, opts)
}

func (i *Instance) register(address string, local bool, h bus.Handler, opts []bus.ConsumerOption) (*bus.Consumer, error) {
	// The instance's executor unless the caller's options say otherwise.
	opts = append([]bus.ConsumerOption{bus.RunOn(i.exec)}, opts...)
	var c *bus.Consumer
	var err error
	if local {
		c, err = i.node.bus.LocalConsumer(address, h, opts...)
	} else {
		c, err = i.node.bus.Consumer(address, h, opts...)
	}
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	i.consumers = append(i.consumers, c)
	i.mu.Unlock()
	return c, nil
}

func (i *Instance) unregisterAll(ctx context.Context) error {
	i.mu.Lock()
	cs := i.consumers
	i.consumers = nil
	i.mu.Unlock()
	return bus.UnregisterAll(ctx, cs)
}

func (i *Instance) stats() bus.ConsumerStats {
	i.mu.Lock()
	defer i.mu.Unlock()
	var s bus.ConsumerStats
	for _, c := range i.consumers {
		cs := c.Stats()
		s.Received += cs.Received
		s.Handled += cs.Handled
		s.Overflowed += cs.Overflowed
		s.Rejected += cs.Rejected
		s.Pending += cs.Pending
	}
	return s
}
