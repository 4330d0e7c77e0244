package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/bus/bustest"
	"github.com/cloister-dev/cloister/cluster"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startNode(t testing.TB, opts cluster.Options) *cluster.Node {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("cluster.Start: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// startCluster starts size embedded servers routed on loopback and waits
// until every server has a route to every other.
func startCluster(t testing.TB, size int) []*cluster.Node {
	t.Helper()
	nodes := make([]*cluster.Node, size)
	nodes[0] = startNode(t, cluster.Options{Name: "n0", ClusterListen: "127.0.0.1:-1"})
	for i := 1; i < size; i++ {
		nodes[i] = startNode(t, cluster.Options{
			Name:          fmt.Sprintf("n%d", i),
			ClusterListen: "127.0.0.1:-1",
			Routes:        []string{nodes[0].ClusterURL()},
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		for !routedToAll(n, size) {
			if time.Now().After(deadline) {
				t.Fatalf("cluster of %d did not form", size)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nodes
}

// routedToAll reports whether n has routes to size-1 distinct servers.
func routedToAll(n *cluster.Node, size int) bool {
	rz, err := n.Server().Routez(nil)
	if err != nil {
		return false
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteID] = true
	}
	return len(peers) == size-1
}

func settle(t *testing.T, nodes []*cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cluster.Settle(ctx, nodes...); err != nil {
		t.Fatal(err)
	}
}

func transportsOn(t *testing.T, nodes []*cluster.Node, n int) []bus.Transport {
	out := make([]bus.Transport, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range out {
		tr, err := nodes[i%len(nodes)].NewTransport(ctx)
		if err != nil {
			t.Fatalf("NewTransport: %v", err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		out[i] = tr
	}
	return out
}

func TestConformanceOneServer(t *testing.T) {
	nodes := []*cluster.Node{startNode(t, cluster.Options{Name: "single"})}
	bustest.Run(t, bustest.Harness{
		Transports: func(t *testing.T, n int) []bus.Transport { return transportsOn(t, nodes, n) },
		Features:   features,
	})
}

func TestConformanceThreeServers(t *testing.T) {
	nodes := startCluster(t, 3)
	bustest.Run(t, bustest.Harness{
		// Each bus of a test sits on a different server: node i on
		// server i mod 3.
		Transports: func(t *testing.T, n int) []bus.Transport { return transportsOn(t, nodes, n) },
		Settle:     func(t *testing.T) { settle(t, nodes) },
	})
}
