package trusted

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// connEcho is the child side of BenchmarkBoundaryEchoProcess: a bare
// boundary.Conn that answers every Deliver from its reading goroutine.
func connEcho() {
	c, err := boundary.NewConn(context.Background(), os.Stdin, os.Stdout, boundary.RoleEnclave, boundary.Options{})
	if err != nil {
		os.Exit(2)
	}
	for {
		m, err := c.Recv()
		if err != nil {
			os.Exit(0)
		}
		d := m.(*boundary.Deliver)
		c.Send(&boundary.Reply{Token: d.Token, Body: d.Body})
	}
}

// startChild runs this test binary as a child process with env=1 (which
// makes TestMain play that part) and returns the host side of a boundary
// connection over its stdin and stdout; the child ends with the benchmark.
func startChild(b *testing.B, env string) *boundary.Conn {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"=1")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c, err := boundary.NewConn(context.Background(), out, in, boundary.RoleHost, boundary.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		cmd.Wait()
	})
	return c
}

// BenchmarkBoundaryEchoProcess is a reference: a 64-byte deliver → reply
// round trip through boundary.Conn to a child process without the trusted
// runtime (no workers, no handler).
func BenchmarkBoundaryEchoProcess(b *testing.B) {
	c := startChild(b, envConnEcho)
	body := make([]byte, 64)
	for i := 0; b.Loop(); i++ {
		c.Send(&boundary.Deliver{Token: uint64(i + 1), Kind: wire.KindRequest, Address: "echo", Body: body})
		if _, err := c.Recv(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrustedProcessDirect is BenchmarkRoundTrip's process case with
// one request in flight, but the host reads the reply in the sending
// goroutine (no host-side goroutine hop): the enclave side's latency.
func BenchmarkTrustedProcessDirect(b *testing.B) {
	c := startChild(b, envImage)
	c.Send(testInit())
	for {
		m, _ := c.Recv()
		if m.Type() == boundary.TypeReady {
			break
		}
	}
	body := make([]byte, 64)
	for i := 0; b.Loop(); i++ {
		c.Send(&boundary.Deliver{Token: uint64(i + 1), Kind: wire.KindRequest, Address: "echo", Body: body})
		for {
			m, err := c.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if m.Type() == boundary.TypeReply {
				break
			}
		}
	}
}
