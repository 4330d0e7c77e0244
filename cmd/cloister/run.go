package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/examples/water/app"
	"github.com/cloister-dev/cloister/tracing"
)

func runCommand() *cobra.Command {
	var (
		nodeName, dashboard, leak, security, metrics string
		traceURL                                     string
		stateDir                                     string
		logs                                         logFlags
		sensors                                      int
		period, leakAfter, duration                  time.Duration
		flags                                        *pflag.FlagSet
	)
	cmd := &cobra.Command{
		Use:   "run APP.yaml",
		Short: "run an application: the water-network monitor of examples/water on this machine",
		Long: `Starts the application an app.yaml describes — the nodes (embedded NATS with
JetStream), the sensors simulator, ingest, the coordinator and analytics
enclaves (process backend, simulated attestation; images built on first use,
the manifest generated from their measurements), alerts and the dashboard —
prints where the dashboard is, then a one-line summary per second, until
Ctrl-C or SIGTERM, when it stops cleanly (also during start-up). --log-level
info shows the services' and the NATS servers' logs; --log-format json writes
them as one JSON object per line. Each node serves Prometheus metrics and
health on loopback (--metrics; the addresses are printed at start).

The state (the coordinator's keys and manifest, analytics' sealed states,
JetStream, the images) is kept in the file's state_dir (relative to the
file; the shipped files use examples/water/state/) or --state-dir, so that
a second run continues where the first stopped. Every value is checked
before anything starts: a bad value, a port in use or an unusable state
directory is an error at once.

  cloister run examples/water/app.yaml          # one node
  cloister run examples/water/app-3nodes.yaml   # three routed nodes in this process
  cloister run --node n2 examples/water/app-3nodes.yaml   # only node n2 (one process per node)

Inject a leak while it runs: the dashboard's button, or
  curl -X POST 'http://127.0.0.1:8080/api/leak?sensor=s-007'`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("run takes one APP.yaml, got %d arguments", len(args))}
			}
			h, level, err := logs.handler(env.stderr)
			if err != nil {
				return err
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
			// Flags given are checked as given (a zero or negative value
			// is a mistake, not "use the file's"), before the file is read.
			set := map[string]bool{}
			flags.Visit(func(f *pflag.Flag) { set[f.Name] = true })
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
			cfg, err := app.LoadConfig(args[0])
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
				return &usageError{err: fmt.Errorf("%s with the flags given: %w", args[0], err)}
			}
			if level > slog.LevelInfo {
				h = &quietServer{h: h, minLevel: slog.LevelError + 4} // --log-level info shows them
			}
			logger := slog.New(h)
			a, err := app.Start(ctx, cfg, app.Options{Only: nodeName, Out: env.stdout, Logger: logger, Metrics: metrics, TraceEndpoint: traceURL})
			if err != nil {
				return err
			}
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			runErr := a.Run(ctx)
			fmt.Fprintln(env.stdout, "stopping ...")
			cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := a.Close(cctx); err != nil {
				return fmt.Errorf("run: stopping: %w", err)
			}
			fmt.Fprintln(env.stdout, "stopped")
			return runErr
		}),
	}
	fs := cmd.Flags()
	flags = fs
	fs.StringVar(&nodeName, "node", "", "run only this node of the file (the others run in other processes)")
	fs.StringVar(&dashboard, "dashboard", "", "dashboard host:port (overrides the file)")
	fs.StringVar(&security, "security", "", "coordinator, channel or plain (overrides the file)")
	fs.StringVar(&stateDir, "state-dir", "", "keep the state (keys, sealed states, JetStream, images) in this `directory` (overrides the file's state_dir)")
	fs.IntVar(&sensors, "sensors", 0, "number of sensors (overrides the file)")
	durationVar(fs, &period, "period", 0, "time between two readings of a sensor (overrides the file)")
	fs.StringVar(&leak, "leak", "", "script a leak on this sensor (overrides the file)")
	durationVar(fs, &leakAfter, "leak-after", 0, "when the scripted leak starts")
	durationVar(fs, &duration, "duration", 0, "stop after this long (0: run until interrupted)")
	fs.StringVar(&metrics, "metrics", "127.0.0.1:0", "`host:port` of the first node's operations endpoint (/metrics, /healthz, /readyz); the next nodes take the next ports (port 0: free ports); empty: none")
	fs.StringVar(&traceURL, "trace-endpoint", "", "export OpenTelemetry spans of every node's messages to this OTLP/HTTP `URL` (e.g. http://127.0.0.1:4318/v1/traces); empty: no tracing")
	logs.register(fs, "warn")
	return cmd
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
