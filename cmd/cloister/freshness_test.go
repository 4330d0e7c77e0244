package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/testenv"
)

// freshApp is an application of three processes, one per node, sharing a
// state directory: the vault of 'cloister init' on n1, a coordinator
// replica on each node, freshness with every write registered (checkpoint
// 0s).
type freshApp struct {
	t     *testing.T
	dir   string
	desc  string
	env   []string
	urls  map[string]string // node → its NATS URL
	coord string            // the coordinator image's measurement
	mu    sync.Mutex
	procs map[string]*freshProc
}

type freshProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer // stdout
	stderr *strings.Builder
	done   chan struct{}
}

func newFreshApp(t *testing.T, nodeNames ...string) *freshApp {
	dir := filepath.Join(t.TempDir(), "fresh")
	if code, out, errOut := runCLI(t, "init", dir); code != 0 {
		t.Fatalf("init: %d\n%s\n%s", code, out, errOut)
	}
	a := &freshApp{t: t, dir: dir, desc: filepath.Join(dir, "app.yaml"), urls: map[string]string{}, procs: map[string]*freshProc{},
		env: append(os.Environ(), "GOFLAGS=-mod=mod", "XDG_CONFIG_HOME="+t.TempDir())}
	nats := map[string]string{}
	var routes []string
	cl := map[string]string{}
	for _, n := range nodeNames {
		nats[n], cl[n] = freePort(t), freePort(t)
		a.urls[n] = "nats://" + nats[n]
		routes = append(routes, "nats-route://"+cl[n])
	}
	var nodes strings.Builder
	for _, n := range nodeNames {
		run := "[]"
		if n == "n1" {
			run = "[vault]"
		}
		fmt.Fprintf(&nodes, "  - {name: %s, nats_listen: %s, cluster_listen: %s, routes: [%s], run: %s}\n", n, nats[n], cl[n], strings.Join(routes, ", "), run)
	}
	desc := `name: fresh
state_dir: state
restart_backoff: 50ms
max_restart_backoff: 500ms
coordinator:
  freshness: true          # one replica per node
  checkpoint: 0s           # every write registered with a quorum before its reply
images:
  vault: {package: ./vault}
addresses:
  vault.count: {secured: true, clients: true, consume: [vault]}
clients:
  meter-7: {key_file: state/meter-7.pem}
nodes:
` + nodes.String()
	if err := os.WriteFile(a.desc, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stopAll)
	return a
}

// start starts the process of node n.
func (a *freshApp) start(n string, flags ...string) {
	a.t.Helper()
	cmd := exec.Command(cloisterBin, append(append([]string{"run", "--node", n}, flags...), "app.yaml")...)
	cmd.Dir, cmd.Env = a.dir, a.env
	p := &freshProc{cmd: cmd, out: &syncBuffer{}, stderr: &strings.Builder{}, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		io.Copy(p.out, stdout)
		cmd.Wait()
	}()
	a.mu.Lock()
	a.procs[n] = p
	a.mu.Unlock()
}

// waitOutput waits until node n's output has text.
func (a *freshApp) waitOutput(n, text string, patience time.Duration) {
	a.t.Helper()
	p := a.procs[n]
	deadline := time.Now().Add(patience)
	for !strings.Contains(p.out.String(), text) {
		select {
		case <-p.done:
			a.t.Fatalf("node %s exited before %q:\n%s\n%s", n, text, p.out.String(), p.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("node %s: no %q after %v:\n%s\n%s", n, text, patience, p.out.String(), p.stderr.String())
		}
	}
}

// kill kills node n's process and the enclaves it hosts with SIGKILL, as
// a machine that loses power.
func (a *freshApp) kill(n string) {
	a.t.Helper()
	p := a.procs[n]
	for _, pid := range childrenOf(p.cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	p.cmd.Process.Kill()
	<-p.done
}

func (a *freshApp) stopAll() {
	for _, p := range a.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for n, p := range a.procs {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			a.kill(n)
		}
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// enclaveOf returns the process of node n that runs image name.
func (a *freshApp) enclaveOf(n, image string) int {
	a.t.Helper()
	for _, pid := range childrenOf(a.procs[n].cmd.Process.Pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), image) {
			return pid
		}
	}
	a.t.Fatalf("node %s runs no %s enclave", n, image)
	return 0
}

// count asks the vault to count user's request, over a verified client
// session, through node via's NATS; it returns the count or the failure.
func (a *freshApp) count(via, user string) (int, string) {
	return a.countWithin(via, user, 10*time.Second)
}

// countWithin is count, waiting at most timeout for the answer.
func (a *freshApp) countWithin(via, user string, timeout time.Duration) (int, string) {
	a.t.Helper()
	if a.coord == "" {
		code, meas, errOut := runCLI(a.t, "enclave", "measure", filepath.Join(a.dir, "state", "images", "n1", "coordinator.img"))
		if code != 0 {
			a.t.Fatalf("measure: %d %s", code, errOut)
		}
		a.coord = strings.Fields(meas)[0]
	}
	var out, stderr strings.Builder
	cmd := exec.Command(cloisterBin, "request", "-s", a.urls[via], "--secure", "--allow-simulation", "--timeout", timeout.String(),
		"--coordinator-measurement", a.coord, "--manifest", filepath.Join(a.dir, "state", "manifest.yaml"),
		"--service", "vault", "--client", "meter-7", "--client-key", filepath.Join(a.dir, "state", "meter-7.pem"),
		"vault.count", user)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = a.dir, a.env, &out, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Sprintf("%v: %s", err, stderr.String())
	}
	n, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		return 0, "answer " + out.String()
	}
	return n, ""
}

// mustCount counts, retrying a failure for a while (a node that just went
// down takes its routes with it), and checks the count is want.
func (a *freshApp) mustCount(via, user string, want int) {
	a.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		n, failure := a.count(via, user)
		if failure == "" {
			if n != want {
				a.t.Fatalf("count %d, want %d: a write was lost or applied twice", n, want)
			}
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("vault.count via %s: %s", via, failure)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// replicas runs 'cloister coordinator replicas' through node via.
func (a *freshApp) replicas(via string) string {
	a.t.Helper()
	_, out, errOut := runCLI(a.t, "coordinator", "replicas", "-s", a.urls[via], "--replicas", "3")
	return out + errOut
}

// waitReplicas waits until every replica reports state.
func (a *freshApp) waitReplicas(via, state string) {
	a.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := a.replicas(via)
		if strings.Count(out, " "+state+" ") == 3 {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("replicas not all %s:\n%s", state, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestFreshnessThreeNodes is the check of freshness across real
// processes: three nodes, one process each, three coordinator replicas.
// kill -9 of one node loses nothing and joins go on; kill -9 of two nodes
// at once (a lost quorum) stops the service until the owner's signed
// recovery statement, after which it serves again from where it was.
func TestFreshnessThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs three application processes")
	}
	a := newFreshApp(t, "n1", "n2", "n3")
	key := filepath.Join(a.dir, "state", "owner.pem")
	for _, n := range []string{"n1", "n2", "n3"} {
		a.start(n)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		a.waitOutput(n, "fresh: ready", 3*time.Minute)
	}
	a.waitReplicas("n1", "live")
	t.Logf("replicas:\n%s", a.replicas("n1"))
	// Nothing to recover from: the owner's verb says so and signs nothing.
	if code, out, errOut := runCLI(t, "coordinator", "recover", "-s", a.urls["n1"], "--key", key, "--yes"); code != exitRejected || !strings.Contains(errOut, "no replica needs recovery") {
		t.Fatalf("recover with every replica live: %d\n%s\n%s", code, out, errOut)
	}
	want := 0
	for range 3 {
		want++
		a.mustCount("n1", "ada", want)
	}

	// One node lost (kill -9, its replica with it): the vault still
	// serves, every write still reaches a quorum, nothing is lost.
	a.kill("n3")
	want++
	a.mustCount("n1", "ada", want)
	// A join while n3 is down: the vault's enclave killed and restarted
	// joins through the two replicas left, and its state is all there.
	syscall.Kill(a.enclaveOf("n1", "vault"), syscall.SIGKILL)
	want++
	a.mustCount("n2", "ada", want)
	// n3 back: its replica is admitted by the others.
	a.start("n3")
	a.waitOutput("n3", "fresh: ready", time.Minute)
	a.waitReplicas("n1", "live")
	want++
	a.mustCount("n3", "ada", want)

	// A rolled-back replica: n3's state from before a rotation, put back
	// while n3 is down, is refused when n3 starts (counted), and the
	// replica takes the group's.
	rotate := []string{"coordinator", "rotate", "-s", a.urls["n1"], "--owner-key", key, "--grace", "1m"}
	slot2 := filepath.Join(a.dir, "state", "coordinator-replicas", "2")
	old := filepath.Join(t.TempDir(), "slot2")
	if err := os.CopyFS(old, os.DirFS(slot2)); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, rotate...); code != exitOK || !strings.Contains(out, "key epoch:    2") {
		t.Fatalf("rotate: exit %d\n%s\n%s", code, out, errOut)
	}
	a.kill("n3")
	if err := os.RemoveAll(slot2); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(slot2, os.DirFS(old)); err != nil {
		t.Fatal(err)
	}
	a.start("n3")
	a.waitOutput("n3", "fresh: ready", time.Minute)
	a.waitReplicas("n1", "live")
	code, out, errOut := runCLI(t, "coordinator", "replicas", "-s", a.urls["n1"], "--replicas", "3", "--json")
	var slots []replicaJSON
	if err := json.Unmarshal([]byte(out), &slots); err != nil || code != exitOK || len(slots) != 3 || slots[2].Status == nil || slots[2].Status.Rollbacks == 0 {
		t.Fatalf("the rolled-back replica's state was not refused and counted: %d\n%s\n%s\n%s", code, out, errOut, a.replicas("n1"))
	}
	want++
	a.mustCount("n3", "ada", want)

	before := a.replicas("n1")
	// A majority restart: n2 and n3 killed at once and started again.
	// Their replicas cannot learn the latest versions from a quorum, so
	// nothing is served until the owner says where to continue from.
	a.kill("n2")
	a.kill("n3")
	a.start("n2")
	a.start("n3")
	for _, n := range []string{"n2", "n3"} {
		a.waitOutput(n, "Nothing is served until the manifest owner signs a recovery statement", time.Minute)
	}
	out = a.replicas("n1")
	if !strings.Contains(out, "needs-recovery") {
		t.Fatalf("after a majority restart, no replica needs recovery:\n%s", out)
	}
	t.Logf("replicas after the majority restart:\n%s", out)
	// A change of the coordinator's state is refused: no quorum confirms
	// it. (The last live replica may still have taken it: after the
	// recovery, every replica takes it too.)
	if code, out, errOut := runCLI(t, rotate...); code == exitOK || !strings.Contains(errOut, "503") {
		t.Fatalf("a key rotation while the replicas had no quorum: exit %d\n%s\n%s", code, out, errOut)
	} else {
		t.Logf("rotate refused while the quorum is lost: %s", strings.TrimSpace(errOut))
	}
	// The vault's writes are refused: its runtime registers each with the
	// replicas before the reply (checkpoint 0s). Such a write may still stand after
	// the recovery — its reply was withheld, nobody was told — so the next
	// count is one or two up.
	if !strings.Contains(before, "service/vault/0@") {
		t.Fatalf("the replicas remember no version of the vault's state:\n%s", before)
	}
	if n, failure := a.countWithin("n1", "ada", 3*time.Second); failure == "" {
		t.Fatalf("the vault answered (count %d) while the replicas had no quorum", n)
	} else {
		t.Logf("the vault refused while the quorum is lost: %s", failure)
	}
	// The owner's statement, refused without a confirmation.
	if code, out, errOut := runCLI(t, "coordinator", "recover", "-s", a.urls["n1"], "--key", key); code != exitRejected || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("recover without --yes and no answer: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "coordinator", "recover", "-s", a.urls["n1"], "--key", key, "--yes")
	if code != exitOK || !strings.Contains(out, "recovery statement for manifest") {
		t.Fatalf("recover: %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("cloister coordinator recover --yes:\n%s", out)
	for _, n := range []string{"n2", "n3"} {
		a.waitOutput(n, "fresh: ready", time.Minute)
	}
	a.waitReplicas("n1", "live")
	want++
	// The refused write may stand (see above).
	if n, failure := a.count("n1", "ada"); failure != "" || n != want && n != want+1 {
		t.Fatalf("count after the recovery: %d %s, want %d or %d", n, failure, want, want+1)
	}
	// Changes are taken again, by every replica alike: epoch 3, or 4 when
	// the refused rotation took effect. Until the replicas have all taken
	// such a rotation, one may refuse the next epoch as not its next.
	epochs := regexp.MustCompile(`key epoch:    (3|4)\b`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, errOut := runCLI(t, rotate...)
		if code == exitOK && epochs.MatchString(out) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotate after the recovery: exit %d\n%s\n%s\n%s", code, out, errOut, a.replicas("n1"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	testenv.WaitFor(t.Context(), t, "every replica at one coordinator version", func() error {
		var slots []replicaJSON
		_, out, _ := runCLI(t, "coordinator", "replicas", "-s", a.urls["n1"], "--replicas", "3", "--json")
		if err := json.Unmarshal([]byte(out), &slots); err != nil {
			return err
		}
		versions := map[uint64]bool{}
		for _, s := range slots {
			if s.Status == nil {
				return fmt.Errorf("replica %d: %s", s.Slot, s.Error)
			}
			for _, r := range s.Status.Local {
				if r.Subject == "coordinator" {
					versions[r.Counter] = true
				}
			}
		}
		if len(versions) != 1 {
			return fmt.Errorf("coordinator versions %v", versions)
		}
		return nil
	})
}

// TestFreshnessSingleNodeRestart: with one node (one replica), every stop
// and start is a lost quorum. The start says so and waits for the owner;
// --recover signs the statement at start with the state directory's owner
// key, saying that it continues from the state on disk; the vault's
// counts are all there.
func TestFreshnessSingleNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs an application three times")
	}
	a := newFreshApp(t, "n1")
	a.start("n1")
	a.waitOutput("n1", "fresh: ready", 3*time.Minute)
	a.mustCount("n1", "ada", 1)
	a.mustCount("n1", "ada", 2)
	stop := func() {
		p := a.procs["n1"]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatal("cloister run did not stop on SIGTERM")
		}
	}
	stop()
	// Started again without --recover: it waits for the owner.
	a.start("n1")
	a.waitOutput("n1", "Nothing is served until the manifest owner signs a recovery statement", time.Minute)
	a.waitOutput("n1", "cloister coordinator recover --key "+filepath.Join(a.dir, "state", "owner.pem"), time.Second)
	if out := a.replicas("n1"); !strings.Contains(out, "needs-recovery") {
		t.Fatalf("a restarted single replica does not need recovery:\n%s", out)
	}
	stop()
	if strings.Contains(a.procs["n1"].out.String(), "fresh: ready") {
		t.Fatalf("ready without the owner's statement:\n%s", a.procs["n1"].out.String())
	}
	// --recover: the start signs it, loudly.
	a.start("n1", "--recover")
	a.waitOutput("n1", "fresh: ready", time.Minute)
	out := a.procs["n1"].out.String()
	if !strings.Contains(out, "CONTINUES FROM THE STATE ON DISK") || !strings.Contains(out, "RECOVERY:   coordinator at version") {
		t.Fatalf("--recover did not say what it signed:\n%s", out)
	}
	a.mustCount("n1", "ada", 3)
}
