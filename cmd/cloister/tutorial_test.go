package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tutorialFile is the tutorial whose commands TestTutorial runs.
const tutorialFile = "../../docs/tutorial.md"

// tutorialStep is one ```sh block of the tutorial.
//
// A line "<!-- tutorial: OPTIONS -->" right before the block's opening
// fence sets, comma-separated:
//
//	dir=checkout   run at the root of the checkout instead of the
//	               working directory ~/hello (the application the
//	               tutorial makes)
//	background     start it and leave it running (a second terminal);
//	               it is stopped with SIGINT, like Ctrl-C, when the next
//	               background step starts and at the end
//	ready="TEXT"   with background: the step is up once its output has TEXT
//	fails          the block must exit with a non-zero status
//
// A ```text block that opens on the line right after the block's closing
// fence is its expected standard output (compared without surrounding
// white space).
type tutorialStep struct {
	line       int // of the opening fence, 1-based
	script     string
	checkout   bool
	background bool
	ready      string
	fails      bool
	output     *string
}

// parseTutorial returns the ```sh blocks of a tutorial in order.
func parseTutorial(doc string) ([]tutorialStep, error) {
	lines := strings.Split(doc, "\n")
	var steps []tutorialStep
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		st := tutorialStep{line: i + 1}
		if i > 0 {
			if err := st.options(lines[i-1]); err != nil {
				return nil, fmt.Errorf("line %d: %w", i, err)
			}
		}
		body, end, err := fenced(lines, i)
		if err != nil {
			return nil, err
		}
		st.script = body
		i = end
		if i+1 < len(lines) && strings.TrimSpace(lines[i+1]) == "```text" {
			out, end, err := fenced(lines, i+1)
			if err != nil {
				return nil, err
			}
			st.output = &out
			i = end
		}
		if st.ready != "" && !st.background {
			return nil, fmt.Errorf("line %d: ready= without background", st.line)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// fenced returns the text of the fenced block opening at lines[open] and
// the index of its closing fence.
func fenced(lines []string, open int) (string, int, error) {
	for j := open + 1; j < len(lines); j++ {
		if strings.TrimSpace(lines[j]) == "```" {
			return strings.Join(lines[open+1:j], "\n") + "\n", j, nil
		}
	}
	return "", 0, fmt.Errorf("line %d: the block never closes", open+1)
}

// options reads a "<!-- tutorial: ... -->" line (any other line sets
// nothing). Unknown options are errors, so a typo cannot silently skip a
// check.
func (st *tutorialStep) options(line string) error {
	line = strings.TrimSpace(line)
	rest, ok := strings.CutPrefix(line, "<!-- tutorial:")
	if !ok {
		return nil
	}
	rest, ok = strings.CutSuffix(rest, "-->")
	if !ok {
		return fmt.Errorf("unterminated tutorial comment %q", line)
	}
	for _, opt := range strings.Split(rest, ",") {
		opt = strings.TrimSpace(opt)
		switch {
		case opt == "dir=checkout":
			st.checkout = true
		case opt == "background":
			st.background = true
		case opt == "fails":
			st.fails = true
		case strings.HasPrefix(opt, `ready="`) && strings.HasSuffix(opt, `"`) && len(opt) > len(`ready=""`):
			st.ready = opt[len(`ready="`) : len(opt)-1]
		default:
			return fmt.Errorf("unknown tutorial option %q", opt)
		}
	}
	return nil
}

func TestParseTutorial(t *testing.T) {
	doc := "intro\n<!-- tutorial: dir=checkout -->\n```sh\ngo version\n```\n```text\ngo\n```\n" +
		"<!-- tutorial: background, ready=\"up now\" -->\n```sh\nserve\n```\n" +
		"```sh\nplain\n```\n\n```text\nnot an expectation: a blank line comes first\n```\n" +
		"<!-- tutorial: fails -->\n```sh\nfalse\n```\n"
	steps, err := parseTutorial(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 4 {
		t.Fatalf("%d steps: %+v", len(steps), steps)
	}
	if s := steps[0]; !s.checkout || s.script != "go version\n" || s.output == nil || *s.output != "go\n" || s.line != 3 {
		t.Errorf("step 1: %+v", s)
	}
	if s := steps[1]; !s.background || s.ready != "up now" || s.checkout || s.output != nil {
		t.Errorf("step 2: %+v", s)
	}
	if s := steps[2]; s.background || s.fails || s.output != nil || s.script != "plain\n" {
		t.Errorf("step 3: %+v", s)
	}
	if s := steps[3]; !s.fails {
		t.Errorf("step 4: %+v", s)
	}
	for _, bad := range []string{
		"<!-- tutorial: detach -->\n```sh\nx\n```\n",
		"<!-- tutorial: ready=\"x\" -->\n```sh\nx\n```\n",
		"```sh\nnever closed\n",
	} {
		if _, err := parseTutorial(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestTutorial runs every shell block of docs/tutorial.md with sh, in
// order, as a reader would: the install block really runs 'go install' (into
// a temporary GOBIN put first on PATH), HOME is a temporary directory, and
// the blocks that the reader runs in a second terminal run in the
// background. Two things differ from a reader's shell, and both are
// deliberate: each block starts a new shell in its directory, and the NATS
// port 4222 is replaced by a free one — in the blocks, in the app.yaml
// that cloister init writes, and as $NATS_URL, the CLI's default server —
// so a server already on 4222 cannot break the test.
func TestTutorial(t *testing.T) {
	if testing.Short() {
		t.Skip("installs cloister, builds images and starts processes")
	}
	doc, err := os.ReadFile(tutorialFile)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseTutorial(string(doc))
	if err != nil {
		t.Fatalf("%s: %v", tutorialFile, err)
	}
	if len(steps) == 0 {
		t.Fatalf("%s has no sh blocks", tutorialFile)
	}
	checkout, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	home := filepath.Join(tmp, "home")
	gobin := filepath.Join(tmp, "bin")
	for _, d := range []string{home, gobin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(home, "hello")
	env, err := tutorialEnv(home, gobin)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	env = append(env, "NATS_URL=nats://127.0.0.1:"+port)
	// movePort moves the application's NATS port to the free one, once
	// cloister init has written its app.yaml.
	movePort := func() {
		desc := filepath.Join(work, "app.yaml")
		if b, err := os.ReadFile(desc); err == nil && strings.Contains(string(b), "127.0.0.1:4222") {
			if err := os.WriteFile(desc, []byte(strings.ReplaceAll(string(b), "127.0.0.1:4222", "127.0.0.1:"+port)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	var bg *tutorialBackground
	stopBackground := func() {
		if bg == nil {
			return
		}
		if err := bg.stop(); err != nil {
			t.Errorf("%s:%d: stopping with SIGINT: %v\n%s", tutorialFile, bg.step.line, err, bg.out.String())
		}
		bg = nil
	}
	t.Cleanup(stopBackground) // before the temporary directory goes

	for _, st := range steps {
		script := strings.ReplaceAll(st.script, "127.0.0.1:4222", "127.0.0.1:"+port)
		dir := work
		if st.checkout {
			dir = checkout
		}
		where := fmt.Sprintf("%s:%d", tutorialFile, st.line)
		movePort()
		if st.background {
			stopBackground()
			bg = startTutorialBackground(t, st, script, dir, env)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-e", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var exitErr *exec.ExitError
		switch {
		case st.fails && err == nil:
			t.Fatalf("%s: should fail, but succeeded:\n%s\nstdout:\n%s", where, script, stdout.String())
		case st.fails && errors.As(err, &exitErr):
			continue
		case err != nil:
			t.Fatalf("%s: %v\n%s\nstdout:\n%s\nstderr:\n%s", where, err, script, stdout.String(), stderr.String())
		}
		if st.output != nil && strings.TrimSpace(stdout.String()) != strings.TrimSpace(*st.output) {
			t.Fatalf("%s: printed %q, the tutorial shows %q\nstderr:\n%s", where, stdout.String(), *st.output, stderr.String())
		}
	}
}

// tutorialEnv is the environment of the tutorial's shells: this one's,
// with HOME in the test's directory (so the simulation keys and the
// tutorial's files land there), the Go caches kept where they are, and
// GOBIN first on PATH.
func tutorialEnv(home, gobin string) ([]string, error) {
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV").Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	vals := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(vals) != 4 {
		return nil, fmt.Errorf("go env printed %q", out)
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "PATH", "GOBIN", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV", "NATS_URL",
			"XDG_CONFIG_HOME", "XDG_CACHE_HOME", "GOFLAGS":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"PATH="+gobin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GOBIN="+gobin,
		"GOCACHE="+vals[0], "GOMODCACHE="+vals[1], "GOPATH="+vals[2], "GOENV="+vals[3],
	), nil
}

// tutorialBackground is a block running in its own process group, as in
// a second terminal.
type tutorialBackground struct {
	step tutorialStep
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

func startTutorialBackground(t *testing.T, st tutorialStep, script, dir string, env []string) *tutorialBackground {
	t.Helper()
	where := fmt.Sprintf("%s:%d", tutorialFile, st.line)
	b := &tutorialBackground{step: st, cmd: exec.Command("sh", "-e", "-c", script), out: &syncBuffer{}, done: make(chan error, 1)}
	b.cmd.Dir, b.cmd.Env = dir, env
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	if st.ready == "" {
		return b
	}
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(b.out.String(), st.ready) {
		select {
		case err := <-b.done:
			b.done <- err
			t.Fatalf("%s: exited before %q (%v):\n%s", where, st.ready, err, b.out.String())
		case <-deadline:
			_ = b.stop()
			t.Fatalf("%s: no %q after 3 minutes:\n%s", where, st.ready, b.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return b
}

// stop sends SIGINT to the block's process group, as Ctrl-C in its
// terminal would, and waits for it; it must end within a minute (then it
// is killed), with status 0 or, as the shell running it may, by the
// SIGINT itself.
func (b *tutorialBackground) stop() error {
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGINT)
	select {
	case err := <-b.done:
		b.done <- err
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
				return nil
			}
		}
		return err
	case <-time.After(time.Minute):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("still running a minute after SIGINT: %w", <-b.done)
	}
}
