package app

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

// TestFaults runs the application under a hostile host and failures, in
// one run: forged readings of several kinds, a flood of replayed readings
// injected straight into the broker, the analytics enclave SIGKILLed twice
// and the coordinator once, all while the sensors stream. At the end every
// sensor's readings are accounted for by sequence number: each applied
// exactly once, none lost, and every forgery refused, counted and kept as
// a dead letter. On three routed nodes (the shipped layout: sensors and
// ingest on n1, the coordinator and analytics on n2), both of n2's enclaves
// are also SIGKILLed at once. FAULTS_ROUNDS=N repeats the kills N times
// (default 1).
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts enclaves and kills them")
	}
	t.Run("one node", func(t *testing.T) { testFaults(t, testConfig(t, 4)) })
	t.Run("three nodes", func(t *testing.T) { testFaults(t, threeNodeConfig(t, 4)) })
}

func testFaults(t *testing.T, cfg *Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sensors := cfg.Sensors.Count
	a, logs := startAppLogs(t, ctx, cfg)
	tp := startTap(t, a.NATSURL())
	accepted := func() uint64 { return acceptedReadings(ctx, a) }
	ingestCounts := func() map[string]uint64 {
		for _, svc := range a.State().Services {
			if svc.Name == ServiceIngest {
				return svc.Counts
			}
		}
		return nil
	}
	testenv.WaitFor(ctx, t, "readings", func() bool { return accepted() >= uint64(sensors)*20 })

	// Forgeries, sent where the sensors send (the durable address), so
	// that ingest hands them to analytics.
	cl, _, err := ConnectCoordinator(ctx, a.Bus(), a.coordImg.Measurement, a.manifest.Hash(), a.simKeys(), a.logger)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cl.ServiceKey(ctx, ServiceAnalytics)
	if err != nil {
		t.Fatal(err)
	}
	info := secure.ChannelInfo(ServiceAnalytics, a.manifest.Hash())
	reading := func(sensor string) []byte {
		r := monitor.NewSensor(sensor).Next(time.Now().UnixMilli())
		r.Seq = 1 << 40 // would silence the sensor if it were accepted
		return r.Encode()
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	var forged [][]byte
	// A one-shot v1 request: no credential at all.
	if _, b, err := secure.SealRequest(pub, info, reading("s-002")); err == nil {
		forged = append(forged, b)
	}
	// A made-up sensor, and a real sensor's name with another key.
	for _, cred := range []secure.Credential{{Name: "s-999", Key: stranger}, {Name: "s-002", Key: stranger}} {
		s, err := secure.NewClientSession(pub, info, cred, secure.ClientSessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, b, err := s.Seal(reading(cred.Name))
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, b)
	}
	// A genuine sensor reporting for another.
	b, err := cl.As(a.creds["s-001"]).Seal(ctx, ServiceAnalytics, reading("s-002"))
	if err != nil {
		t.Fatal(err)
	}
	forged = append(forged, b)
	if len(forged) != 4 {
		t.Fatalf("%d forgeries made", len(forged))
	}
	for _, f := range forged {
		if err := a.Bus().Send(ctx, AddressReadings, f); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(ctx, t, "the forgeries dead-lettered", func() bool { return ingestCounts()["dead_letters"] == uint64(len(forged)) })
	// The analytics node's metrics count the trusted runtime's rejections
	// by address and reason, and name no sensor, key or payload.
	testenv.WaitFor(ctx, t, "rejections in the metrics", func() bool {
		return scrapeRejections(t, a) > 0
	})
	// A forged join: the coordinator refuses it, and the node hosting it
	// counts the refusal by reason.
	if _, err := a.Bus().Request(ctx, provision.AddressJoin, []byte("not a join")); !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("a garbage join: %v", err)
	}
	testenv.WaitFor(ctx, t, "the refused join in the metrics", func() bool {
		return scrapeSum(t, a, `cloister_coordinator_join_replies_total{reason="bad-request",result="refused"}`) >= 1
	})

	// A replay flood: every reading the broker stored so far, injected
	// again three times as the host could.
	nc, err := nats.Connect(a.NATSURL(), nats.Name("replayer"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var replayed int
	seen := map[string]bool{}
	for _, f := range forged {
		seen[string(f)] = true // replaying a forgery only dead-letters it again
	}
	for _, m := range tp.all() {
		if m.Subject != "cloister.durable."+AddressReadings || !secure.IsSessionMessage(m.Data) || seen[string(m.Data)] {
			continue
		}
		seen[string(m.Data)] = true
		// Without JetStream's message ID, which would let the broker drop
		// the copies itself: the host controls the broker.
		h := nats.Header{}
		for k, v := range m.Header {
			if k != nats.MsgIdHdr {
				h[k] = v
			}
		}
		for range 3 {
			if err := nc.PublishMsg(&nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}); err != nil {
				t.Fatal(err)
			}
			replayed++
		}
	}
	if replayed < sensors*10 {
		t.Fatalf("only %d readings replayed", replayed)
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	for ingestCounts()["duplicates"] < uint64(replayed)/2 && rctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	rcancel()
	if c := ingestCounts(); c["duplicates"] < uint64(replayed)/2 {
		t.Fatalf("%d readings replayed; ingest %v", replayed, c)
	}

	// Crashes while the sensors stream.
	rounds := 1
	if v := os.Getenv("FAULTS_ROUNDS"); v != "" {
		if _, err := fmt.Sscan(v, &rounds); err != nil {
			t.Fatalf("FAULTS_ROUNDS=%q: %v", v, err)
		}
	}
	// kill SIGKILLs the named enclaves at once and waits for their
	// restarts and for readings to flow again.
	kill := func(names ...string) {
		t.Helper()
		restarts := map[string]int{}
		for _, name := range names {
			pid := 0
			for _, e := range a.Enclaves() {
				if e.Name == name {
					pid, restarts[name] = e.PID, e.Restarts
				}
			}
			if pid == 0 {
				t.Fatalf("no %s enclave: %+v", name, a.Enclaves())
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		what := strings.Join(names, " and ")
		testenv.WaitFor(ctx, t, what+" restarted", func() bool {
			up := 0
			for _, e := range a.Enclaves() {
				if r, ok := restarts[e.Name]; ok && e.Restarts > r && e.State == "up" {
					up++
				}
			}
			return up == len(names)
		})
		before := accepted()
		testenv.WaitFor(ctx, t, "readings after "+what+" restarted", func() bool { return accepted() >= before+uint64(sensors)*5 })
	}
	for range rounds {
		kill(ServiceAnalytics)
		kill(ServiceCoordinator)
		kill(ServiceAnalytics, ServiceCoordinator) // the trusted node's enclaves at once
	}

	last, _ := stopAndAccount(t, ctx, a)
	counts := ingestCounts()
	if counts["dead_letters"] != uint64(len(forged)) {
		t.Errorf("ingest %v: want exactly the %d forgeries dead-lettered", counts, len(forged))
	}
	// The dead letters are kept, one per line, with the code that refused
	// them.
	f, err := os.Open(deadLetterFile(a))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != len(forged) || !strings.Contains(strings.Join(lines, "\n"), `"code":403`) {
		t.Errorf("dead letters: %d lines, want %d (one a 403)", len(lines), len(forged))
	}
	t.Logf("readings %v; ingest %v", last, counts)
	if strings.Contains(logs.String(), "pressure") {
		t.Error("a reading in clear in the logs")
	}
}

// stopAndAccount stops the sensors of a, waits until analytics has taken
// every reading they sent into account (their last sequence numbers, no
// gap) and fails t unless each reading was applied exactly once and none
// was rejected. It returns the sensors' last sequence numbers and
// analytics' status.
func stopAndAccount(t *testing.T, ctx context.Context, a *App) (map[string]uint64, monitor.Status) {
	t.Helper()
	last, err := a.StopSensors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var status monitor.Status
	testenv.WaitFor(ctx, t, "every reading accounted for", func() bool {
		if status, err = a.AnalyticsStatus(ctx, a.Config().SensorIDs()); err != nil {
			return false
		}
		for id, seq := range last {
			if c := status.Sensors[id]; c.LastSeq != seq || c.Gaps != 0 {
				return false
			}
		}
		return true
	})
	for id, seq := range last {
		if c := status.Sensors[id]; c.Accepted != seq || c.Rejected != 0 {
			t.Errorf("sensor %s sent %d readings; analytics: %+v (each must be applied exactly once)", id, seq, c)
		}
	}
	return last, status
}

// deadLetterFile is where ingest of the application's first node keeps
// refused readings.
func deadLetterFile(a *App) string {
	for _, g := range a.ingests {
		return g.deadFile
	}
	return ""
}

// scrapeRejections scrapes the node hosting analytics and returns the sum
// of its enclave rejection counters; it fails the test if a label of any
// metric names a sensor, or a rejection lacks its address or reason.
func scrapeRejections(t *testing.T, a *App) float64 {
	t.Helper()
	for _, body := range scrapeAll(t, a) {
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "cloister_enclave_rejections_total{") &&
				(!strings.Contains(line, `address="water.analytics`) || !strings.Contains(line, `reason="`)) {
				t.Fatalf("rejection without its served address and reason: %s", line)
			}
		}
	}
	return scrapeSum(t, a, "cloister_enclave_rejections_total{")
}

// scrapeSum sums, over the nodes of a, the samples whose line starts with
// prefix.
func scrapeSum(t *testing.T, a *App, prefix string) float64 {
	t.Helper()
	var sum float64
	for _, body := range scrapeAll(t, a) {
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, prefix) {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				sum += v
			}
		}
	}
	return sum
}

// scrapeAll fetches /metrics of every node of a; it fails the test if a
// label of any metric names a sensor.
func scrapeAll(t *testing.T, a *App) []string {
	t.Helper()
	var out []string
	for _, name := range a.app.NodeNames() {
		addr := a.app.Node(name).OpsAddr()
		if addr == "" {
			t.Fatal("a node without an operations endpoint")
		}
		resp, err := http.Get("http://" + addr + node.PathMetrics)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(raw), `"s-0`) {
			t.Fatalf("a metric label names a sensor:\n%s", raw)
		}
		out = append(out, string(raw))
	}
	return out
}

// envHostChild names the state directory of the application that
// TestHostProcessKilled runs in a child process (the test binary itself).
const envHostChild = "WATER_TEST_HOST_CHILD"

// hostChildConfig is the configuration both lives of TestHostProcessKilled
// run with.
func hostChildConfig(stateDir string) (*Config, error) {
	cfg := Default()
	cfg.Dashboard = "127.0.0.1:0"
	cfg.Sensors.Count = 3
	cfg.Sensors.Period = 20 * time.Millisecond
	cfg.StateDir = stateDir
	cfg.Summary = -1
	return cfg, cfg.Check()
}

// TestHostProcessKilled: the whole host process — nodes, NATS with
// JetStream, ingest, the sensors, the enclaves' host — is SIGKILLed while
// readings stream, then the application starts again on the same state
// directory. Every reading of every sensor is applied exactly once: those
// JetStream held are delivered again, those under sessions the restarted
// enclave no longer holds are sealed again by their sensors (which kept
// their sessions), and nothing is applied twice.
func TestHostProcessKilled(t *testing.T) {
	if dir := os.Getenv(envHostChild); dir != "" {
		cfg, err := hostChildConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			t.Fatal(err)
		}
		select {} // until killed
	}
	if testing.Short() {
		t.Skip("kills a host process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostProcessKilled$")
	cmd.Env = append(os.Environ(), envHostChild+"="+state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// However the test ends, the child and its enclaves end with it.
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	// The sensors keep their sequence numbers every second: once they are
	// past 30, readings are in flight everywhere.
	testenv.WaitFor(ctx, t, "the first life's readings", func() bool {
		b, err := os.ReadFile(filepath.Join(state, "sensors-n1.json"))
		var seqs map[string]uint64
		if err != nil || json.Unmarshal(b, &seqs) != nil || len(seqs) == 0 {
			return false
		}
		for _, n := range seqs {
			if n < 30 {
				return false
			}
		}
		return true
	})
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil { // the host and its enclaves
		t.Fatal(err)
	}
	cmd.Process.Wait()

	cfg, err := hostChildConfig(state)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Start(ctx, cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	before := acceptedReadingsNow(ctx, t, a)
	testenv.WaitFor(ctx, t, "the second life's readings", func() bool { return acceptedReadings(ctx, a) >= before+30 })
	last, status := stopAndAccount(t, ctx, a)
	t.Logf("after the host was killed: readings %v; analytics %+v", last, status.Sensors)
}

// TestTamperedStateLosesNothing: the host corrupts analytics' sealed state
// on disk between two runs. The second run refuses to start, naming the
// cause (the blobs fail authentication; nothing is blamed on a replay), so
// nothing is taken from JetStream or acknowledged. Once the genuine blobs
// are back, a third run applies every reading exactly once.
func TestTamperedStateLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the application three times")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := testConfig(t, 2)
	logs := &syncBuffer{}
	run := func(what string, body func(a *App)) {
		t.Helper()
		a, err := Start(ctx, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body(a)
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			t.Errorf("%s: close: %v", what, err)
		}
	}
	var first uint64
	run("first run", func(a *App) {
		testenv.WaitFor(ctx, t, "readings", func() bool { return acceptedReadings(ctx, a) >= 20 })
		if _, err := a.StopSensors(ctx); err != nil {
			t.Fatal(err)
		}
		first = acceptedReadings(ctx, a)
	})
	// The host flips a bit in every blob analytics sealed (first applying
	// the store's journal to the blob files, as a checkpoint would).
	dir := filepath.Join(cfg.StateDir, "analytics")
	fs, err := enclave.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, "*.blob"))
	if len(blobs) == 0 {
		t.Fatalf("no sealed blobs in %s", dir)
	}
	genuine := map[string][]byte{}
	for _, p := range blobs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		genuine[p] = b
		bad := append([]byte(nil), b...)
		bad[len(bad)-1] ^= 1
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The enclave refuses to start over state it cannot open (its own
	// channel key is among the blobs), and says why; nothing is taken from
	// JetStream meanwhile.
	if a, err := Start(ctx, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}); err == nil {
		a.Close(context.Background())
		t.Fatal("the application started over tampered state")
	} else if !strings.Contains(err.Error(), "authentication failed") || strings.Contains(err.Error(), "replay") {
		t.Fatalf("start over tampered state: the error does not name the cause: %v", err)
	}
	for p, b := range genuine {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run("run over the genuine state", func(a *App) {
		testenv.WaitFor(ctx, t, "readings", func() bool { return acceptedReadings(ctx, a) >= first+20 })
		stopAndAccount(t, ctx, a)
	})
}

// acceptedReadingsNow is analytics' count of accepted readings, asked until
// it answers (while the storage is full the enclave restarts after every
// failed write, and a status request can meet it restarting).
func acceptedReadingsNow(ctx context.Context, t *testing.T, a *App) uint64 {
	t.Helper()
	var n uint64
	testenv.WaitFor(ctx, t, "analytics' status", func() error {
		st, err := a.AnalyticsStatus(ctx, a.Config().SensorIDs())
		if err != nil {
			return err
		}
		n = 0
		for _, c := range st.Sensors {
			n += c.Accepted
		}
		return nil
	})
	return n
}

// TestStorageFullMidStream: analytics' state directory stops taking writes
// while readings stream — its filesystem (a small tmpfs; the test needs to
// be root and skips otherwise) is filled up — and takes them again once
// space is freed. Writes fail, so replies fail and the enclave restarts
// until the storage is back; no reading is acknowledged meanwhile, and
// every reading is then applied exactly once. (A read-only remount is not
// possible under open files; a full disk fails writes the same way.)
func TestStorageFullMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := testConfig(t, 3)
	dir := filepath.Join(cfg.StateDir, "analytics")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mount := func(args ...string) error {
		out, err := exec.Command("mount", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mount %v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := mount("-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", dir); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	a, logs := startAppLogs(t, ctx, cfg)
	testenv.WaitFor(ctx, t, "readings", func() bool { return acceptedReadings(ctx, a) >= 30 })
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	// Fill it to the last byte: a journal record is a few hundred bytes,
	// so space left over by a failed 1 MiB write would still take
	// readings for a while.
	chunk := make([]byte, 1<<20)
	for size := len(chunk); size > 0; size /= 2 {
		for {
			if _, err := f.Write(chunk[:size]); err != nil {
				break
			}
		}
	}
	f.Close()
	before := acceptedReadingsNow(ctx, t, a)
	// Each failed write fails the answers that waited for it and restarts
	// the enclave (so that its cache cannot outlive a lost write).
	testenv.WaitFor(ctx, t, "the enclave restarting while the storage is full", func() bool {
		for _, e := range a.Enclaves() {
			if e.Name == ServiceAnalytics {
				return e.Restarts >= 2
			}
		}
		return false
	})
	// Allowed: the readings in flight, and the few records the journal's
	// last page (allocated before the filler took the rest) still holds —
	// tmpfs allocates whole 4 KiB pages. Without the failure readings go
	// on at 80 a second, hundreds while the enclave restarts twice.
	const lastPageRecords = 16
	if n := acceptedReadingsNow(ctx, t, a); n > before+uint64(cfg.Sensors.Count)+lastPageRecords {
		t.Errorf("%d readings applied while the storage was full (before: %d)", n, before)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "readings after the storage is back", func() bool { return acceptedReadings(ctx, a) >= before+30 })
	last, status := stopAndAccount(t, ctx, a)
	for _, svc := range a.State().Services {
		if svc.Name == ServiceIngest && svc.Counts["dead_letters"] != 0 {
			t.Errorf("ingest %v: readings dead-lettered while the storage was full", svc.Counts)
		}
	}
	if !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the logs do not name the cause")
	}
	t.Logf("readings %v; analytics %+v", last, status.Sensors)
}
