package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/examples/water/app"
	"github.com/cloister-dev/cloister/manifest"
)

// Defaults of cloister bench: about a minute in all.
const (
	defaultBenchSizes       = "256,1024,4096,16384"
	defaultBenchConcurrency = "1,16"
	defaultBenchDuration    = time.Second
	defaultBenchWarmup      = 200 * time.Millisecond
)

func benchCommand() *cobra.Command {
	var (
		sizes, concs, nodes string
		duration, warmup    time.Duration
		quick, jsonOut      bool
		svgFile, image      string
		transport           string
		checkpoints         string
		coordinatorBench    bool
		rounds, repeat      int
		cpuProfile          string
		logs                logFlags
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "measure the water workload with analytics regular vs trusted (vs trusted + secured), on one node and across three",
		Long: `Runs the water application's analytics hop — one sensor reading per
request-reply to analytics, which validates it, updates and stores the
sensor's statistics and replies — in three modes side by side, cell by cell:

  regular          analytics as a regular service, plain JSON readings
  trusted          the analytics enclave (process backend), plain JSON readings
  trusted+secured  the enclave joined to a coordinator; each sensor seals its
                   readings in an authenticated client session (one HPKE
                   encapsulation per session, then AES-GCM) to the enclave's
                   attested key (latency includes the sealing)

at several payload sizes and numbers of requests in flight, on one node and
across three routed embedded nodes (client on n1, analytics on n3). It prints
a progress line while it runs, then a table of throughput and p50/p99 latency
with the overhead against regular. --json prints the results for machines;
--svg FILE writes a chart of the throughput overhead by payload size.

The defaults take about a minute; --quick takes a few seconds (for tests).`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("bench takes no arguments, got %q", args)}
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			if quick { // the flags given explicitly win
				if sizes == defaultBenchSizes {
					sizes = "256,1024"
				}
				if concs == defaultBenchConcurrency {
					concs = "1,4"
				}
				if duration == defaultBenchDuration {
					duration = 150 * time.Millisecond
				}
				if warmup == defaultBenchWarmup {
					warmup = 50 * time.Millisecond
				}
			}
			if transport != "shm" && transport != "pipe" {
				return &usageError{err: fmt.Errorf("--transport: %q (want shm or pipe)", transport)}
			}
			logger, _, err := logs.logger(env.stderr)
			if err != nil {
				return err
			}
			if coordinatorBench {
				return runCoordinatorBench(ctx, env, app.CoordinatorBenchOptions{Rounds: rounds, Image: image, Transport: transport, Logger: logger}, jsonOut)
			}
			if repeat < 1 || repeat > 100 {
				return &usageError{err: fmt.Errorf("--repeat %d: want 1 to 100", repeat)}
			}
			opts := app.BenchOptions{Duration: duration, Warmup: warmup, Image: image, Transport: transport, Logger: logger, Repeat: repeat}
			if opts.Checkpoints, err = checkpointList(checkpoints); err != nil {
				return err
			}
			if opts.Sizes, err = intList("--sizes", sizes, 16, 1<<20); err != nil {
				return err
			}
			if opts.Concurrency, err = intList("--concurrency", concs, 1, 1024); err != nil {
				return err
			}
			if opts.Nodes, err = intList("--nodes", nodes, 1, 3); err != nil {
				return err
			}
			for _, n := range opts.Nodes {
				if n != 1 && n != 3 {
					return &usageError{err: fmt.Errorf("--nodes: %d (want 1 or 3)", n)}
				}
			}
			start := time.Now()
			tty := isTerminal(env.stderr)
			opts.Progress = func(done, total int, cell string) {
				if tty { // one line, rewritten
					fmt.Fprintf(env.stderr, "\r\033[K[%3d/%d] %5.1fs  %s", done, total, time.Since(start).Seconds(), cell)
					if cell == "done" {
						fmt.Fprintln(env.stderr)
					}
					return
				}
				fmt.Fprintf(env.stderr, "[%3d/%d] %5.1fs  %s\n", done, total, time.Since(start).Seconds(), cell)
			}
			fmt.Fprintln(env.stderr, "building the analytics enclave image and starting the nodes ...")
			rep, err := app.RunBench(ctx, opts)
			if err != nil {
				fmt.Fprintln(env.stderr)
				return err
			}
			if jsonOut {
				env.stdout.Write(app.MarshalReport(rep))
			} else {
				writeBenchTable(env.stdout, rep, opts)
			}
			if svgFile != "" {
				if err := os.WriteFile(svgFile, benchSVG(rep, opts), 0o644); err != nil {
					return fmt.Errorf("bench: --svg: %w", err)
				}
				fmt.Fprintf(env.stderr, "wrote %s\n", svgFile)
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&sizes, "sizes", defaultBenchSizes, "payload `sizes` in bytes, comma-separated")
	fs.StringVar(&concs, "concurrency", defaultBenchConcurrency, "requests in `flight`, comma-separated")
	fs.StringVar(&nodes, "nodes", "1,3", "topologies: `nodes` (1 and/or 3)")
	durationVar(fs, &duration, "duration", defaultBenchDuration, "measured time per cell")
	durationVar(fs, &warmup, "warmup", defaultBenchWarmup, "unmeasured time before each cell")
	fs.BoolVar(&quick, "quick", false, "a small, short run (256 and 1024 B, 1 and 4 in flight, 150ms per cell, unless given)")
	fs.BoolVar(&jsonOut, "json", false, "print the results as JSON instead of the table")
	fs.StringVar(&svgFile, "svg", "", "write a chart of the overhead by payload size to `file`")
	fs.StringVar(&image, "image", "", "a prebuilt analytics enclave `image` (default: built now)")
	fs.StringVar(&transport, "transport", "shm", "how frames cross to the enclaves: `shm` (shared memory) or pipe")
	fs.BoolVar(&coordinatorBench, "coordinator", false, "instead of the water hop, time joins and coordinator restarts (kill -9 of a replica) without freshness, with 1 replica and with 3")
	fs.IntVar(&repeat, "repeat", 1, "run every cell `N` times, interleaved, and report the medians")
	fs.IntVar(&rounds, "rounds", 3, "with --coordinator: joins and restarts timed per layout")
	fs.StringVar(&checkpoints, "checkpoint", "off", "freshness settings, comma-separated: off (no freshness) and checkpoint `intervals` (0, 100ms, 1s); trusted+secured runs again under each interval")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this process (client, nodes and hosts; not the enclaves) to `file`")
	logs.register(fs, "error")
	return cmd
}

// isTerminal tells whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// checkpointList parses --checkpoint: "off" and checkpoint intervals.
func checkpointList(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
			continue
		case p == "off":
			out = append(out, app.FreshnessOff)
			continue
		case p == "0":
			p = "0s"
		}
		d, err := time.ParseDuration(p)
		if err != nil || d < 0 || d > manifest.MaxCheckpoint {
			return nil, &usageError{err: fmt.Errorf("--checkpoint: %q is neither off nor an interval from 0 to %v (such as 100ms)", p, manifest.MaxCheckpoint)}
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, &usageError{err: fmt.Errorf("--checkpoint: empty")}
	}
	if slices.ContainsFunc(out, func(d time.Duration) bool { return d != app.FreshnessOff }) && !slices.Contains(out, app.FreshnessOff) {
		out = append([]time.Duration{app.FreshnessOff}, out...) // what freshness is compared with
	}
	return out, nil
}

func intList(flagName, s string, lo, hi int) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < lo || n > hi {
			return nil, &usageError{err: fmt.Errorf("%s: %q is not a number from %d to %d", flagName, p, lo, hi)}
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, &usageError{err: fmt.Errorf("%s: empty", flagName)}
	}
	return out, nil
}

// overhead is the throughput lost against regular, in percent.
func overhead(regular, other app.BenchResult) float64 {
	if regular.Throughput == 0 {
		return math.NaN()
	}
	return 100 * (1 - other.Throughput/regular.Throughput)
}

func sizeLabel(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func writeBenchTable(w io.Writer, rep *app.BenchReport, opts app.BenchOptions) {
	fmt.Fprintf(w, "analytics image %s; %s per cell", rep.Measurement[:16], rep.Duration)
	if opts.Repeat > 1 {
		fmt.Fprintf(w, ", median of %d rounds", opts.Repeat)
	}
	fmt.Fprintf(w, "; throughput in requests/s, latency p50/p99 in µs;\n")
	fmt.Fprintf(w, "overhead = throughput lost against regular (negative: faster)\n\n")
	fmt.Fprintf(w, "crossings = boundary frames the enclave took in per request; KEMs = HPKE encapsulations per request\n\n")
	fmt.Fprintf(w, "%-5s %-8s %-6s | %-24s | %-38s | %-46s\n", "nodes", "payload", "flight", "regular", "trusted", "trusted+secured")
	fmt.Fprintf(w, "%-5s %-8s %-6s | %8s %7s %7s | %8s %7s %7s %7s %5s | %8s %7s %7s %7s %5s %6s\n", "", "", "",
		"req/s", "p50", "p99", "req/s", "p50", "p99", "ovh", "cross", "req/s", "p50", "p99", "ovh", "cross", "KEMs")
	fmt.Fprintln(w, strings.Repeat("-", 132))
	for _, n := range opts.Nodes {
		for _, size := range opts.Sizes {
			for _, c := range opts.Concurrency {
				reg, ok := rep.Find(n, app.ModeRegular, size, c)
				if !ok {
					continue
				}
				tr, _ := rep.Find(n, app.ModeTrustedPlain, size, c)
				ts, _ := rep.Find(n, app.ModeTrustedSecured, size, c)
				fmt.Fprintf(w, "%-5d %-8s %-6d | %8.0f %7.0f %7.0f | %8.0f %7.0f %7.0f %6.1f%% %5.2f | %8.0f %7.0f %7.0f %6.1f%% %5.2f %6.4f\n",
					n, sizeLabel(size), c, reg.Throughput, reg.P50, reg.P99,
					tr.Throughput, tr.P50, tr.P99, overhead(reg, tr), tr.CrossingsPerRequest,
					ts.Throughput, ts.P50, ts.P99, overhead(reg, ts), ts.CrossingsPerRequest, ts.KEMsPerRequest)
			}
		}
	}
	writeFreshnessTable(w, rep, opts)
	errs := 0
	for _, r := range rep.Results {
		errs += r.Errors
	}
	fmt.Fprintf(w, "\nfailed requests: %d\n", errs)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
}

// runCoordinatorBench runs and prints 'bench --coordinator'.
func runCoordinatorBench(ctx context.Context, env *cliEnv, opts app.CoordinatorBenchOptions, jsonOut bool) error {
	if opts.Rounds < 1 || opts.Rounds > 100 {
		return &usageError{err: fmt.Errorf("--rounds %d: want 1 to 100", opts.Rounds)}
	}
	start := time.Now()
	opts.Progress = func(step string) {
		fmt.Fprintf(env.stderr, "%5.1fs  %s\n", time.Since(start).Seconds(), step)
	}
	rep, err := app.RunCoordinatorBench(ctx, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(env.stdout, rep)
	}
	w := env.stdout
	fmt.Fprintf(w, "coordinator: join and restart times in ms (median of %d rounds; each round in brackets)\n\n", opts.Rounds)
	fmt.Fprintf(w, "%-32s %5s | %8s %-28s | %8s %s\n", "layout", "nodes", "join", "", "restart", "")
	fmt.Fprintln(w, strings.Repeat("-", 110))
	for _, t := range rep.Timings {
		fmt.Fprintf(w, "%-32s %5d | %8.1f %-28s | %8.1f %s\n", t.Layout, t.Nodes, app.Median(t.JoinMS), roundsText(t.JoinMS), app.Median(t.RestartMS), roundsText(t.RestartMS))
	}
	fmt.Fprintln(w)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	return nil
}

// roundsText lists each round's time.
func roundsText(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// writeFreshnessTable prints trusted+secured under each freshness
// checkpoint interval measured, against the same without freshness.
func writeFreshnessTable(w io.Writer, rep *app.BenchReport, opts app.BenchOptions) {
	var labels []string
	for _, cp := range opts.Checkpoints {
		if l := app.CheckpointLabel(cp); l != "" {
			labels = append(labels, l)
		}
	}
	if len(labels) == 0 {
		return
	}
	fmt.Fprintf(w, "\nfreshness: trusted+secured with a checkpoint interval, against trusted+secured without freshness (same run)\n")
	fmt.Fprintf(w, "%-5s %-8s %-6s | %-24s", "nodes", "payload", "flight", "no freshness")
	for _, l := range labels {
		fmt.Fprintf(w, " | %-31s", "checkpoint "+l)
	}
	fmt.Fprintf(w, "\n%-5s %-8s %-6s | %8s %7s %7s", "", "", "", "req/s", "p50", "p99")
	for range labels {
		fmt.Fprintf(w, " | %8s %7s %7s %6s", "req/s", "p50", "p99", "ovh")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, strings.Repeat("-", 48+34*len(labels)))
	for _, n := range opts.Nodes {
		for _, size := range opts.Sizes {
			for _, c := range opts.Concurrency {
				off, ok := rep.Find(n, app.ModeTrustedSecured, size, c)
				if !ok {
					continue
				}
				fmt.Fprintf(w, "%-5d %-8s %-6d | %8.0f %7.0f %7.0f", n, sizeLabel(size), c, off.Throughput, off.P50, off.P99)
				for _, l := range labels {
					x, _ := rep.FindCheckpoint(n, app.ModeTrustedSecured, size, c, l)
					fmt.Fprintf(w, " | %8.0f %7.0f %7.0f %5.1f%%", x.Throughput, x.P50, x.P99, overhead(off, x))
				}
				fmt.Fprintln(w)
			}
		}
	}
}

// benchSVG draws the throughput overhead against regular by payload size,
// one line per topology and mode, at the lowest concurrency measured (one
// request in flight by default: the steadiest comparison on a shared
// machine; the table has every level).
func benchSVG(rep *app.BenchReport, opts app.BenchOptions) []byte {
	const (
		W, H                   = 720, 420
		left, right, top, bott = 70, 200, 50, 60
	)
	conc := opts.Concurrency[0]
	type series struct {
		name  string
		color string
		dash  string
		pts   []float64
	}
	var ss []series
	colors := map[string]string{app.ModeTrustedPlain: "#1f77b4", app.ModeTrustedSecured: "#d62728"}
	lo, hi := 0.0, 10.0
	for _, n := range opts.Nodes {
		for _, mode := range []string{app.ModeTrustedPlain, app.ModeTrustedSecured} {
			s := series{name: fmt.Sprintf("%s, %d node", mode, n), color: colors[mode]}
			if n > 1 {
				s.name += "s"
				s.dash = ` stroke-dasharray="6 4"`
			}
			for _, size := range opts.Sizes {
				reg, _ := rep.Find(n, app.ModeRegular, size, conc)
				x, _ := rep.Find(n, mode, size, conc)
				v := overhead(reg, x)
				if math.IsNaN(v) {
					v = 0
				}
				s.pts = append(s.pts, v)
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
			ss = append(ss, s)
		}
	}
	// Round the axis to whole steps, so that 0 is a grid line.
	step := 10.0
	if hi-lo > 100 {
		step = 20
	}
	lo = math.Floor(lo/step) * step
	hi = math.Ceil(hi/step) * step
	pw, ph := float64(W-left-right), float64(H-top-bott)
	xAt := func(i int) float64 {
		if len(opts.Sizes) == 1 {
			return left + pw/2
		}
		return left + pw*float64(i)/float64(len(opts.Sizes)-1)
	}
	yAt := func(v float64) float64 { return top + ph*(hi-v)/(hi-lo) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">Throughput overhead against regular analytics (%d in flight)</text>`+"\n", left, conc)
	fmt.Fprintf(&b, `<text x="%d" y="38" fill="#555">cloister bench — %s per cell; lower is better; 0%% = as fast as regular</text>`+"\n", left, rep.Duration)
	for v := lo; v <= hi+1e-9; v += step {
		y := yAt(v)
		stroke := "#e5e5e5"
		if v == 0 {
			stroke = "#888"
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, y, left+pw, y, stroke)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", left-6, y+4, v)
	}
	for i, size := range opts.Sizes {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xAt(i), top+ph+18, sizeLabel(size))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">payload size</text>`+"\n", left+pw/2, H-15)
	for k, s := range ss {
		var pts []string
		for i, v := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(v)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, s.dash, strings.Join(pts, " "))
		for i, v := range s.pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s, %s: %.1f%%</title></circle>`+"\n", xAt(i), yAt(v), s.color, s.name, sizeLabel(opts.Sizes[i]), v)
		}
		ly := top + 10 + 22*k
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", left+pw+15, ly, left+pw+45, ly, s.color, s.dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", left+pw+50, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}
