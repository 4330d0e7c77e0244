package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cloisterBin is the cloister binary built once for the process tests.
var cloisterBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cloister-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cloisterBin = filepath.Join(dir, "cloister")
	build := exec.Command("go", "build", "-o", cloisterBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building cloister: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// busProc is a cloister child process whose output the test watches.
type busProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func startBusProc(t *testing.T, name string, args ...string) *busProc {
	t.Helper()
	p := &busProc{t: t, name: name, cmd: exec.Command(cloisterBin, args...), done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *busProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitMatch waits (bounded, not timed) until the output matches re and
// returns the submatches.
func (p *busProc) waitMatch(re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, re, p.output())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s never printed %q:\n%s", p.name, re, p.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to exit.
func (p *busProc) stop(sig syscall.Signal) error {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not exit after %v", p.name, sig)
		return nil
	}
}

var nodeReadyLine = regexp.MustCompile(`cloister node: ready.* clients=(\S+) cluster=(\S+)`)

// startNodeProc starts `cloister node` and returns it with its client and
// cluster URLs.
func startNodeProc(t *testing.T, name string, extra ...string) (*busProc, string, string) {
	t.Helper()
	args := append([]string{"node", "--name", name, "--nats-listen", "127.0.0.1:-1", "--cluster-listen", "127.0.0.1:-1"}, extra...)
	p := startBusProc(t, name, args...)
	m := p.waitMatch(nodeReadyLine)
	return p, m[1], m[2]
}

// request runs `cloister request` once and returns its output and error.
func busRequest(ctx context.Context, server, address, body string) (string, error) {
	cmd := exec.CommandContext(ctx, cloisterBin, "request", "--servers", server, "--timeout", "2s", address, body)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// TestThreeNodeProcesses is the acceptance test of the clustered bus: three
// `cloister node` processes routed on loopback, a `cloister reply` consumer
// attached to node 2 and another to node 3, requests from node 1 reach
// both; node 2 is killed with SIGKILL, and requests go on succeeding
// through node 3. Nothing is timed: every wait is a bounded retry.
func TestThreeNodeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	n1, url1, route1 := startNodeProc(t, "n1")
	n2, url2, _ := startNodeProc(t, "n2", "--routes", route1)
	n3, url3, _ := startNodeProc(t, "n3", "--routes", route1)
	listening := regexp.MustCompile(`listening on svc\.who`)
	startBusProc(t, "reply-2", "reply", "--servers", url2, "--quiet", "svc.who", "from-2").waitMatch(listening)
	startBusProc(t, "reply-3", "reply", "--servers", url3, "--quiet", "svc.who", "from-3").waitMatch(listening)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]int{}
	for seen["from-2"] == 0 || seen["from-3"] == 0 {
		out, err := busRequest(ctx, url1, "svc.who", "hi")
		if err == nil {
			seen[out]++
		}
		if ctx.Err() != nil {
			t.Fatalf("requests from node 1 did not reach both consumers: %v (last error %v)", seen, err)
		}
	}
	t.Logf("before the kill: %v", seen)

	if err := n2.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n2.done

	// Requests in flight when the node died may fail; after that they
	// must succeed again. Wait for ten successes in a row.
	streak, failures := 0, 0
	after := map[string]int{}
	for streak < 10 {
		out, err := busRequest(ctx, url1, "svc.who", "hi")
		if err != nil {
			streak = 0
			failures++
		} else {
			streak++
			after[out]++
		}
		if ctx.Err() != nil {
			t.Fatalf("requests through node 1 did not recover after node 2 was killed: %d failures, last %v", failures, err)
		}
	}
	if after["from-3"] == 0 {
		t.Fatalf("no reply came from the consumer on node 3 after the kill: %v", after)
	}
	t.Logf("after the kill: %v, %d failed while the cluster noticed", after, failures)

	// The survivors exit cleanly on SIGINT and SIGTERM.
	for p, sig := range map[*busProc]syscall.Signal{n1: syscall.SIGINT, n3: syscall.SIGTERM} {
		if err := p.stop(sig); err != nil {
			t.Fatalf("%s on %v: %v\n%s", p.name, sig, err, p.output())
		}
		if !strings.Contains(p.output(), "cloister node: stopped") {
			t.Fatalf("%s did not log its clean stop:\n%s", p.name, p.output())
		}
	}
}
