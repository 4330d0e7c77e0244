package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCounterSurvivesKillAndRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := options{
		image: filepath.Join(dir, "counter.img"), stateDir: filepath.Join(dir, "state"), simDir: filepath.Join(dir, "simulation"),
		users: []string{"alice", "bob"}, rounds: 2, kill: true,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	var out bytes.Buffer
	if err := run(ctx, &out, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"building the enclave image",
		"alice has visited 1 times", "bob has visited 1 times",
		"kill -9", "fails at once", "code 503", "enclave counter/0",
		"enclave restarted as pid",
		"alice has visited 2 times", "bob has visited 2 times",
	} {
		if !strings.Contains(s, want) {
			t.Fatalf("output lacks %q:\n%s", want, s)
		}
	}
	// The user names and counts never reach the disk in the clear.
	filepath.Walk(o.stateDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("alice")) || strings.Contains(p, "alice") {
				t.Errorf("%s reveals a user name", p)
			}
		}
		return err
	})
	// A second run (a new host, the image already built) keeps counting.
	o.rounds, o.kill = 1, false
	out.Reset()
	if err := run(ctx, &out, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if s := out.String(); strings.Contains(s, "building") || !strings.Contains(s, "alice has visited 3 times") {
		t.Fatalf("second run:\n%s", s)
	}
}
