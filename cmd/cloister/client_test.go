package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/internal/syncbuf"
)

// busSyncBuffer is a bytes.Buffer safe for a command writing and a test reading.
type busSyncBuffer = syncbuf.Buffer

// busRunCLI runs one command line in process.
func busRunCLI(ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb busSyncBuffer
	code = run(ctx, &cliEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

// busBackground runs a long-lived command (reply, tap) until the test ends.
type busBackground struct {
	out, err busSyncBuffer
	done     chan int
	cancel   context.CancelFunc
}

func startBusBackground(t *testing.T, args ...string) *busBackground {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &busBackground{done: make(chan int, 1), cancel: cancel}
	go func() {
		bg.done <- run(ctx, &cliEnv{stdin: strings.NewReader(""), stdout: &bg.out, stderr: &bg.err}, args)
	}()
	t.Cleanup(func() { cancel(); <-bg.done })
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(bg.err.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("%v never listened: %s", args, bg.err.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	return bg
}

func busTestNode(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := cluster.Start(ctx, cluster.Options{Name: "cli-test", NATSListen: "127.0.0.1:-1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n.ClientURL()
}

func TestBusVerbs(t *testing.T) {
	url := busTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// No consumer: a request fails at once with "no handlers".
	code, _, stderr := busRunCLI(ctx, "", "request", "--servers", url, "--timeout", "1h", "nobody.home", "x")
	if code != exitFailure || !strings.Contains(stderr, "no handlers") {
		t.Fatalf("request without a consumer: exit %d, %q", code, stderr)
	}

	startBusBackground(t, "reply", "--servers", url, "--echo", "svc.echo")
	code, stdout, stderr := busRunCLI(ctx, "", "request", "--servers", url, "--header", "trace=t-1", "--show-headers", "svc.echo", "hello")
	if code != exitOK || stdout != "trace: t-1\nhello\n" {
		t.Fatalf("request: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = busRunCLI(ctx, "from stdin", "request", "--servers", url, "svc.echo")
	if code != exitOK || stdout != "from stdin\n" {
		t.Fatalf("request with the body on stdin: exit %d, %q", code, stdout)
	}

	startBusBackground(t, "reply", "--servers", url, "--fail", "42", "svc.failing", "no such meter")
	code, _, stderr = busRunCLI(ctx, "", "request", "--servers", url, "svc.failing", "x")
	if code != exitFailure || !strings.Contains(stderr, "code 42: no such meter") {
		t.Fatalf("failing consumer: exit %d, %q", code, stderr)
	}

	sink := startBusBackground(t, "reply", "--servers", url, "svc.sink", "unused")
	tap := startBusBackground(t, "tap", "--servers", url, "--no-replies", "svc.>")
	if code, _, stderr := busRunCLI(ctx, "", "send", "--servers", url, "--count", "2", "svc.sink", "n={{n}}"); code != exitOK {
		t.Fatalf("send: exit %d, %s", code, stderr)
	}
	if code, _, stderr := busRunCLI(ctx, "\x00\x01\xffsecret?", "publish", "--servers", url, "--header", "k=v", "svc.sink"); code != exitOK {
		t.Fatalf("publish: exit %d, %s", code, stderr)
	}
	waitText := func(what string, b *busSyncBuffer, want ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := b.String()
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never showed %q:\n%s", what, want, s)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitText("the consumer", &sink.out, `send svc.sink (3 bytes): "n=1"`, `send svc.sink (3 bytes): "n=2"`, "publish svc.sink (10 bytes): hex:0001ff")
	waitText("the tap", &tap.out,
		"send svc.sink (3 bytes)\n  | n=1\n",
		"publish svc.sink (10 bytes)\n  k: v\n  00000000  00 01 ff 73 65 63 72 65  74 3f",
	)
}

func TestBusVerbsUsage(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"request"},
		{"request", "a..b", "x"},
		{"send", "--header", "novalue", "a.b", "x"},
		{"send", "--count", "0", "a.b", "x"},
		{"reply", "a.b"},
		{"reply", "--echo", "a.b", "body"},
		{"tap", "a.>.b"},
		{"node", "extra"},
		{"node", "--servers", "nats://x:1", "--routes", "y:2"},
	} {
		if code, _, stderr := busRunCLI(ctx, "", args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}
