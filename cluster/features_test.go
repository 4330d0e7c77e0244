package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/bus/bustest"
	"github.com/cloister-dev/cloister/cluster"
)

// features are what the transport has beyond the conformance suite's
// common behaviours, on one server: JetStream's durable addresses, and
// reconnection to an embedded server restarted on the same port.
var features = bustest.Features{AtLeastOnce: durableSystem, Reconnect: restartableSystem}

// durableSystem is one node keeping o's addresses durable, o.N transports
// on it, and the durable stream's view of what it still holds (work-queue
// retention: an acknowledged message is removed).
func durableSystem(t *testing.T, o bustest.DurableOptions) bustest.Durable {
	t.Helper()
	node := startNode(t, cluster.Options{Name: "durable", StoreDir: t.TempDir(), Durable: o.Addresses, AckWait: o.AckWait})
	nc, err := nats.Connect("", nats.InProcessServer(node.Server()), nats.Name("durable-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, cluster.DurableStream)
	if err != nil {
		t.Fatal(err)
	}
	held := func(address string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		subject := cluster.DurablePrefix + address
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatalf("durable stream: %v", err)
		}
		return int(info.State.Subjects[subject])
	}
	return bustest.Durable{Transports: transportsOn(t, []*cluster.Node{node}, o.N), Held: held}
}

// restartableSystem is an embedded server and n client nodes connected to
// it over TCP; restarting it starts a new embedded server on the same
// address.
func restartableSystem(t *testing.T, n int) bustest.Restartable {
	t.Helper()
	srv := startNode(t, cluster.Options{Name: "first", NATSListen: "127.0.0.1:-1"})
	url, addr := srv.ClientURL(), srv.Server().Addr().String()
	var trs []bus.Transport
	for i := range n {
		trs = append(trs, startNode(t, cluster.Options{Name: fmt.Sprintf("client%d", i), Servers: []string{url}}).Transport())
	}
	return bustest.Restartable{
		Transports:   trs,
		Stop:         func() { srv.Server().Shutdown() },
		Start:        func() { startNode(t, cluster.Options{Name: "second", NATSListen: addr}) },
		Disconnected: cluster.ErrDisconnected,
	}
}
