package main

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var durableLine = regexp.MustCompile(`send jobs\.work \(\d+ bytes\) id=(\S+) delivery=\d+: "(job-[ab]\d+)"`)

// consumed returns the messages a `cloister reply` printed, by message ID.
func durableConsumed(out string, into map[string]string) int {
	lines := 0
	for _, m := range durableLine.FindAllStringSubmatch(out, -1) {
		into[m[1]] = m[2]
		lines++
	}
	return lines
}

// TestDurableAddressSurvivesKilledConsumer: a node with JetStream and a
// durable address; messages sent to it while a consumer process works
// through them; the consumer is killed with SIGKILL mid-stream; another
// consumer takes over. Every message sent is consumed (duplicates, which
// carry the same message ID, are dropped), none lost.
func TestDurableAddressSurvivesKilledConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const n = 300
	node := startBusProc(t, "node", "node", "--name", "d1", "--nats-listen", "127.0.0.1:-1",
		"--store-dir", t.TempDir(), "--durable", "jobs.work", "--ack-wait", "1s")
	url := node.waitMatch(regexp.MustCompile(`cloister node: ready.* clients=(\S+)`))[1]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	send := func(from, count string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, cloisterBin, "send", "--servers", url, "--durable", "jobs.work",
			"--count", count, "jobs.work", "job-"+from+"{{n}}").CombinedOutput()
		if err != nil {
			t.Fatalf("cloister send: %v\n%s", err, out)
		}
	}
	// Bodies job-a1..job-a150, then job-b1..job-b150.
	send("a", "150")
	consumerArgs := []string{"reply", "--servers", url, "--durable", "jobs.work", "jobs.work", "ok"}
	first := startBusProc(t, "consumer-1", append(consumerArgs, "--delay", "5ms")...)
	first.waitMatch(regexp.MustCompile(`listening on jobs\.work`))
	send("b", "150")
	for {
		if durableConsumed(first.output(), map[string]string{}) >= 60 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the first consumer did not get going:\n%s", first.output())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done

	second := startBusProc(t, "consumer-2", consumerArgs...)
	got := map[string]string{}
	var lines1, lines2 int
	for {
		got = map[string]string{}
		lines1 = durableConsumed(first.output(), got)
		lines2 = durableConsumed(second.output(), got)
		if len(got) >= n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d messages consumed", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	bodies := map[string]bool{}
	for _, b := range got {
		bodies[b] = true
	}
	for _, prefix := range []string{"job-a", "job-b"} {
		for i := 1; i <= 150; i++ {
			if b := prefix + strconv.Itoa(i); !bodies[b] {
				t.Fatalf("%s lost (%d distinct messages)", b, len(got))
			}
		}
	}
	if len(got) != n || len(bodies) != n {
		t.Fatalf("%d IDs for %d bodies, want %d of each: an ID must name one message", len(got), len(bodies), n)
	}
	t.Logf("consumer 1 printed %d, consumer 2 printed %d, %d distinct messages, %d duplicates",
		lines1, lines2, len(got), lines1+lines2-len(got))
	if strings.Contains(second.output(), "panic") {
		t.Fatalf("second consumer:\n%s", second.output())
	}
}
