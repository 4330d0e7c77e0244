package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
)

// clusterNode starts a cluster node (embedded NATS server) with a bus and a
// Cloister node on it.
func clusterNode(t testing.TB, name string, routes ...string) (*cluster.Node, *bus.Bus, *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cn, err := cluster.Start(ctx, cluster.Options{Name: name, ClusterListen: "127.0.0.1:-1", Routes: routes, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Options{Bus: b, Logger: testLogger(), Simulation: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		_ = cn.Close()
	})
	return cn, b, n
}

// TestAcrossClusterNodes: the coordinator on one node of a NATS cluster,
// the joining enclave on another; refusals keep their codes over NATS, and
// after the coordinator is SIGKILLed and restarted the remote enclave gets
// the same keys again.
func TestAcrossClusterNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and processes")
	}
	dir := stateDir(t)
	a, _, nodeA := clusterNode(t, "a")
	_, busB, nodeB := clusterNode(t, "b", a.ClusterURL())
	if _, err := nodeA.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "coordinator", Image: coordImage.Path, StateDir: filepath.Join(dir, "coordinator"), InitConfig: trustTestRoot(t),
		RestartBackoff: 20 * time.Millisecond, MaxRestartBackoff: 200 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	// s talks from node b; coordinatorPID looks on node a.
	s := &system{t: t, b: busB, n: nodeA, base: dir, owner: owner}
	testenv.WaitFor(t.Context(), t, "the coordinator reachable from node b", func() error {
		_, err := s.call(provision.AddressStatus, nil)
		return err
	})
	s.setManifest(s.manifestJSON(1, true, joinImage.Measurement))

	bad := allowed()
	bad.MREnclave[0] ^= 1
	_, _, _, err := s.joinAs(bad, "analytics")
	refused(t, err, provision.CodeRefused, "is not among the identities of service analytics")

	if _, err := nodeB.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "analytics", Image: joinImage.Path, StateDir: filepath.Join(dir, "analytics"), Env: []string{"JOIN_SERVICE=analytics"},
	}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "the enclave on node b reachable", func() error {
		_, err := s.call("analytics.join", nil)
		return err
	})
	before := s.enclaveJoin("analytics")
	c, err := connect(s, s.hash)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Request(context.Background(), "analytics.echo", "analytics", []byte("over NATS")); err != nil || string(out) != "echo: over NATS" {
		t.Fatalf("secure request across nodes: %q, %v", out, err)
	}

	pid := s.coordinatorPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "coordinator restarted", func() error {
		if p := s.coordinatorPID(); p == 0 || p == pid {
			return errors.New("not yet")
		}
		_, err := s.call(provision.AddressStatus, nil)
		return err
	})
	if after := s.enclaveJoin("analytics"); !equalJSON(before, after) {
		t.Fatalf("keys changed over the restart:\n%+v\n%+v", before, after)
	}
}
