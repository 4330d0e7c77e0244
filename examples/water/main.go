// Command water runs the water-network monitor that an app.yaml of this
// directory describes: the sensors simulator, ingest, the coordinator and
// analytics enclaves, alerts and the dashboard, on one node or several.
// `cloister run examples/water/app.yaml` runs it (the file's program: is
// this package), as does `go run ./examples/water examples/water/app.yaml`.
//
//	water [flags] APP.yaml
//
// It prints where the dashboard is, then a one-line summary per second,
// until Ctrl-C or SIGTERM, when it stops cleanly (also during start-up).
// Every value is checked before anything starts: a bad value, a port in use
// or an unusable state directory is an error at once (exit status 2 for a
// usage error, 1 for a failure).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/examples/water/app"
	"github.com/cloister-dev/cloister/tracing"
)

// Exit statuses.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "water: %v\n(water --help shows the flags)\n", err)
		os.Exit(exitUsage)
	default:
		fmt.Fprintf(os.Stderr, "water: %v\n", err)
		os.Exit(exitFailure)
	}
}

// run parses the flags and runs the application until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		nodeName, dashboard, leak, security, metrics string
		traceURL, stateDir, logLevel, logFormat      string
		sensors                                      int
		period, leakAfter, duration                  time.Duration
	)
	fs := flag.NewFlagSet("water", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&nodeName, "node", "", "run only this node of the file (the others run in other processes)")
	fs.StringVar(&dashboard, "dashboard", "", "dashboard host:port (overrides the file)")
	fs.StringVar(&security, "security", "", "coordinator, channel or plain (overrides the file)")
	fs.StringVar(&stateDir, "state-dir", "", "keep the state (keys, sealed states, JetStream, images) in this `directory` (overrides the file's state_dir)")
	fs.IntVar(&sensors, "sensors", 0, "number of sensors (overrides the file)")
	fs.DurationVar(&period, "period", 0, "time between two readings of a sensor (overrides the file)")
	fs.StringVar(&leak, "leak", "", "script a leak on this sensor (overrides the file)")
	fs.DurationVar(&leakAfter, "leak-after", 0, "when the scripted leak starts")
	fs.DurationVar(&duration, "duration", 0, "stop after this long (0: run until interrupted)")
	fs.StringVar(&metrics, "metrics", "127.0.0.1:0", "`host:port` of the first node's operations endpoint (/metrics, /healthz, /readyz); the next nodes take the next ports (port 0: free ports); empty: none")
	fs.StringVar(&traceURL, "trace-endpoint", "", "export OpenTelemetry spans of every node's messages to this OTLP/HTTP `URL`; empty: no tracing")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text, or json (one JSON object per line)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: water [flags] APP.yaml")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err: err}
	}
	if fs.NArg() != 1 {
		return &usageError{err: fmt.Errorf("want one APP.yaml, got %d arguments", fs.NArg())}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return &usageError{err: fmt.Errorf("--log-level: %w", err)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	default:
		return &usageError{err: fmt.Errorf("--log-format %q: want text or json", logFormat)}
	}
	if metrics != "" {
		if err := cluster.CheckListenAddress("--metrics", metrics); err != nil {
			return &usageError{err: err}
		}
	}
	if traceURL != "" {
		if err := tracing.CheckEndpoint(traceURL); err != nil {
			return &usageError{err: fmt.Errorf("--trace-endpoint: %w", err)}
		}
	}
	// Flags given are checked as given (a zero or negative value is a
	// mistake, not "use the file's"), before the file is read.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set["sensors"] && (sensors < 1 || sensors > app.MaxSensors):
		return &usageError{err: fmt.Errorf("--sensors %d: want 1 to %d", sensors, app.MaxSensors)}
	case set["period"] && period < app.MinPeriod:
		return &usageError{err: fmt.Errorf("--period %v: want at least %v", period, app.MinPeriod)}
	case set["leak-after"] && leakAfter < 0:
		return &usageError{err: fmt.Errorf("--leak-after %v: must not be negative", leakAfter)}
	case duration < 0:
		return &usageError{err: fmt.Errorf("--duration %v: must not be negative (0: run until interrupted)", duration)}
	case set["dashboard"] && dashboard == "":
		return &usageError{err: errors.New("--dashboard: empty (want host:port, e.g. 127.0.0.1:0)")}
	case set["leak"] && leak == "":
		return &usageError{err: errors.New("--leak: empty (want a sensor ID such as s-003)")}
	}
	cfg, err := app.LoadConfig(fs.Arg(0))
	if err != nil {
		return err
	}
	if set["dashboard"] {
		cfg.Dashboard = dashboard
	}
	if set["state-dir"] {
		cfg.StateDir = stateDir
	}
	if set["security"] {
		cfg.Security = security
	}
	if set["sensors"] {
		cfg.Sensors.Count = sensors
	}
	if set["period"] {
		cfg.Sensors.Period = period
	}
	if set["leak"] {
		cfg.Sensors.Leak.Sensor = leak
	}
	if set["leak-after"] {
		cfg.Sensors.Leak.After = leakAfter
	}
	if err := cfg.Check(); err != nil {
		return &usageError{err: fmt.Errorf("%s with the flags given: %w", fs.Arg(0), err)}
	}
	if level > slog.LevelInfo {
		h = &quietServer{h: h, minLevel: slog.LevelError + 4} // --log-level info shows them
	}
	a, err := app.Start(ctx, cfg, app.Options{Only: nodeName, Out: stdout, Logger: slog.New(h), Metrics: metrics, TraceEndpoint: traceURL})
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted during start-up: not a failure
		}
		return err
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	runErr := a.Run(ctx)
	fmt.Fprintln(stdout, "stopping ...")
	cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := a.Close(cctx); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	fmt.Fprintln(stdout, "stopped")
	return runErr
}

// quietServer is a slog.Handler that passes the embedded NATS servers'
// records (component=nats-server) only from minLevel up, so that the routine
// warnings of a starting or stopping cluster do not bury the summary.
type quietServer struct {
	h        slog.Handler
	server   bool
	minLevel slog.Level
}

// Enabled implements slog.Handler.
func (q *quietServer) Enabled(ctx context.Context, l slog.Level) bool {
	if q.server && l < q.minLevel {
		return false
	}
	return q.h.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (q *quietServer) Handle(ctx context.Context, r slog.Record) error { return q.h.Handle(ctx, r) }

// WithAttrs implements slog.Handler.
func (q *quietServer) WithAttrs(attrs []slog.Attr) slog.Handler {
	server := q.server
	for _, a := range attrs {
		if a.Key == "component" && a.Value.String() == "nats-server" {
			server = true
		}
	}
	return &quietServer{h: q.h.WithAttrs(attrs), server: server, minLevel: q.minLevel}
}

// WithGroup implements slog.Handler.
func (q *quietServer) WithGroup(name string) slog.Handler {
	return &quietServer{h: q.h.WithGroup(name), server: q.server, minLevel: q.minLevel}
}
