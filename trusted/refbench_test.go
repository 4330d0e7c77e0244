package trusted

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/cloister-dev/cloister/boundary"
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

// BenchmarkBoundaryEchoProcess is a reference: a 64-byte deliver → reply
// round trip through boundary.Conn to a child process without the trusted
// runtime (no workers, no handler).
func BenchmarkBoundaryEchoProcess(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envConnEcho+"=1")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	defer cmd.Wait()
	c, err := boundary.NewConn(context.Background(), out, in, boundary.RoleHost, boundary.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 64)
	for i := 0; b.Loop(); i++ {
		c.Send(&boundary.Deliver{Token: uint64(i + 1), Kind: boundary.KindRequest, Address: "echo", Body: body})
		if _, err := c.Recv(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrustedProcessDirect is BenchmarkRoundTrip's process case with
// one request in flight, but the host reads the reply in the sending
// goroutine (no host-side goroutine hop): the enclave side's latency.
func BenchmarkTrustedProcessDirect(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envImage+"=1")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	defer cmd.Wait()
	c, err := boundary.NewConn(context.Background(), out, in, boundary.RoleHost, boundary.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Send(testInit())
	for {
		m, _ := c.Recv()
		if m.Type() == boundary.TypeReady {
			break
		}
	}
	body := make([]byte, 64)
	for i := 0; b.Loop(); i++ {
		c.Send(&boundary.Deliver{Token: uint64(i + 1), Kind: boundary.KindRequest, Address: "echo", Body: body})
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
