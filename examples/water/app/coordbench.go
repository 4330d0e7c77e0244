package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
)

// CoordinatorBenchOptions configure RunCoordinatorBench.
type CoordinatorBenchOptions struct {
	// Rounds is how many joins and restarts are timed per layout (default
	// 3).
	Rounds int
	// Image is a prebuilt analytics image; empty: built into a temporary
	// directory.
	Image string
	// Transport is how frames cross to the enclaves (see BenchOptions).
	Transport string
	// Progress, if set, is told what runs.
	Progress func(step string)
	Logger   *slog.Logger
}

// CoordinatorTiming is the timings of one coordinator layout.
type CoordinatorTiming struct {
	// Layout says what ran: the coordinator without freshness, or its
	// replicas.
	Layout   string `json:"layout"`
	Nodes    int    `json:"nodes"`
	Replicas int    `json:"replicas"` // 0: without freshness
	// JoinMS are the times of each round's join: from kill -9 of the
	// analytics enclave that joins the coordinator until it serves again
	// (its restart, attestation and join; with freshness, the read of its
	// state's registered version).
	JoinMS []float64 `json:"join_ms"`
	// RestartMS are the times from kill -9 of a replica (the coordinator
	// without freshness) until it serves again: live again, admitted by a
	// quorum; with one replica, after the owner's recovery statement that
	// the benchmark signs.
	RestartMS []float64 `json:"restart_ms"`
}

// CoordinatorReport is a RunCoordinatorBench run.
type CoordinatorReport struct {
	Started time.Time           `json:"started"`
	Timings []CoordinatorTiming `json:"timings"`
	Notes   []string            `json:"notes"`
}

// coordinatorRestartBackoff is the supervisor's delay before it restarts a
// killed replica in RunCoordinatorBench: short and fixed, so that the
// timings are the replicas' and not a growing backoff's.
const coordinatorRestartBackoff = 10 * time.Millisecond

// RunCoordinatorBench times joins and coordinator restarts: without
// freshness (one coordinator, one node), with one replica on one node and
// with three replicas on three nodes.
func RunCoordinatorBench(ctx context.Context, opts CoordinatorBenchOptions) (*CoordinatorReport, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 3
	}
	progress := func(format string, a ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, a...))
		}
	}
	tmp, err := os.MkdirTemp("", "cloister-coordbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	progress("building the images")
	imgs, err := newBenchImages(ctx, tmp, opts.Image)
	if err != nil {
		return nil, err
	}
	if imgs.creds, err = LoadOrCreateCredentials(tmp, []string{"c1"}); err != nil {
		return nil, err
	}
	rep := &CoordinatorReport{Started: time.Now(), Notes: []string{
		fmt.Sprintf("join: kill -9 of the analytics enclave that joins the coordinator until it serves again: its supervisor restarts it after %v, it attests and joins (with freshness, it also reads its state's registered version from a quorum); the process start is included, alike in every layout", coordinatorRestartBackoff),
		fmt.Sprintf("restart: kill -9 of the last replica's process until it serves again (the coordinator's status answers; with freshness, the replica is live: admitted by a quorum of the others); the supervisor restarts it after %v", coordinatorRestartBackoff),
		"one replica: every restart is a lost quorum, which only the owner's recovery statement ends; the benchmark signs it as soon as the replica asks, so its restart time includes that round trip but no person",
	}}
	for _, layout := range []struct {
		nodes, replicas int
		words           string
	}{
		{1, 0, "one coordinator, no freshness"},
		{1, 1, "1 replica"},
		{3, 3, "3 replicas, one per node"},
	} {
		progress("%s: starting %d node(s)", layout.words, layout.nodes)
		checkpoint := FreshnessOff
		if layout.replicas > 0 {
			checkpoint = time.Second
		}
		m, err := imgs.manifest(checkpoint, layout.replicas)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(tmp, fmt.Sprintf("layout-%d-%d", layout.nodes, layout.replicas))
		c, err := startBenchCluster(ctx, layout.nodes, fmt.Sprintf("coord%d-%d", layout.nodes, layout.replicas), imgs, m, dir, opts.Transport, opts.Logger, coordinatorRestartBackoff)
		if err != nil {
			return nil, fmt.Errorf("app: coordinator bench: %s: %w", layout.words, err)
		}
		t := CoordinatorTiming{Layout: layout.words, Nodes: layout.nodes, Replicas: layout.replicas}
		err = func() error {
			for round := range opts.Rounds {
				progress("%s: join %d of %d", layout.words, round+1, opts.Rounds)
				d, err := timeJoin(ctx, c)
				if err != nil {
					return err
				}
				t.JoinMS = append(t.JoinMS, ms(d))
			}
			for round := range opts.Rounds {
				progress("%s: restart %d of %d", layout.words, round+1, opts.Rounds)
				d, err := timeRestart(ctx, c, imgs, m.HashHex(), layout.replicas)
				if err != nil {
					return err
				}
				t.RestartMS = append(t.RestartMS, ms(d))
			}
			return nil
		}()
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.close(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("app: coordinator bench: %s: %w", layout.words, err)
		}
		rep.Timings = append(rep.Timings, t)
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// Median returns the median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// timeJoin kills the analytics enclave that joins the coordinator with
// SIGKILL and times it until it serves again: its supervisor restarts it,
// it attests and joins again (with freshness, it also reads its state's
// registered version from a quorum before it serves).
func timeJoin(ctx context.Context, c *benchCluster) (time.Duration, error) {
	host := c.nodes[len(c.nodes)-1]
	before, ok := enclaveInstance(host, securedAnalytics)
	if !ok || before.PID == 0 {
		return 0, fmt.Errorf("join: no running %s", securedAnalytics)
	}
	t0 := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("join: kill %s: %w", securedAnalytics, err)
	}
	for deadline := t0.Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		now, ok := enclaveInstance(host, securedAnalytics)
		if !ok || now.Restarts <= before.Restarts || now.PID == 0 || len(now.Serving) == 0 {
			continue
		}
		if _, err := c.client.Request(ctx, addressSecured+".status", []byte(`{}`), bus.Timeout(time.Second)); err == nil {
			return time.Since(t0), nil
		}
	}
	return 0, fmt.Errorf("join: %s not serving a minute after kill -9", securedAnalytics)
}

// timeRestart kills the last replica (the coordinator, without freshness)
// with SIGKILL and times it until it serves again.
func timeRestart(ctx context.Context, c *benchCluster, imgs *benchImages, manifestHash string, replicas int) (time.Duration, error) {
	slot, name := 0, ServiceCoordinator
	host := c.nodes[len(c.nodes)-1]
	if replicas > 0 {
		slot = replicas - 1
		name = application.ReplicaDeployment(slot)
		host = c.nodes[slot%len(c.nodes)]
	}
	before, ok := enclaveInstance(host, name)
	if !ok || before.PID == 0 {
		return 0, fmt.Errorf("restart: no running %s", name)
	}
	t0 := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("restart: kill %s: %w", name, err)
	}
	b := host.Bus()
	deadline := t0.Add(time.Minute)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		now, ok := enclaveInstance(host, name)
		if ok && now.Restarts > before.Restarts && now.PID != 0 {
			if replicas == 0 {
				if _, err := client.CoordinatorStatus(ctx, b, time.Second); err == nil {
					return time.Since(t0), nil
				}
			} else {
				st := application.ReplicaStatuses(ctx, b, replicas, time.Second)[slot]
				switch {
				case st.Status == nil:
				case st.Status.State == provision.ReplicaLive:
					return time.Since(t0), nil
				case st.Status.State == provision.ReplicaNeedsRecovery:
					hash, err := manifest.ParseHash(manifestHash)
					if err != nil {
						return 0, err
					}
					answers, err := application.Recover(ctx, b, imgs.owner, replicas, hash[:], nil)
					if err != nil {
						return 0, fmt.Errorf("restart: recovery: %w", err)
					}
					if err := application.RecoveryErrors(answers); err != nil {
						return 0, fmt.Errorf("restart: recovery: %w", err)
					}
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("restart: %s not serving a minute after kill -9", name)
}

// enclaveInstance returns the first instance of the named enclave on host.
func enclaveInstance(host *node.Node, name string) (node.EnclaveInstance, bool) {
	for _, e := range host.Enclaves() {
		if e.Name == name {
			return e, true
		}
	}
	return node.EnclaveInstance{}, false
}
