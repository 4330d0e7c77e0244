package application

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// ReadyLine is what Run writes to Config.Out once everything has started.
const ReadyLine = "ready"

// stopTimeout bounds how long Run waits for the application to stop.
const stopTimeout = 30 * time.Second

// Run starts the application, writes "NAME: ready" to cfg.Out, waits until
// ctx ends, then stops it.
func Run(ctx context.Context, cfg *Config, services ...GoService) error {
	a, err := Start(ctx, cfg, services...)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "%s: %s (NATS %s; Ctrl-C stops)\n", cfg.Name, ReadyLine, a.NATSURL())
	<-ctx.Done()
	fmt.Fprintf(a.out, "%s: stopping\n", cfg.Name)
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return a.Stop(sctx)
}

// Main is the whole main function of an application's program: it loads
// the description named on the command line (default app.yaml), runs it
// with the program's Go services until SIGINT or SIGTERM, and exits with
// status 1 on error. `cloister run APP.yaml` runs the description's
// program this way.
//
//	func main() {
//		application.Main(application.GoService{Name: "greeter", New: newGreeter})
//	}
func Main(services ...GoService) {
	var o mainOptions
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.StringVar(&o.node, "node", "", "run only this `node` of the description")
	fs.StringVar(&o.stateDir, "state-dir", "", "keep the state in this `directory` (overrides state_dir)")
	fs.StringVar(&o.level, "log-level", "warn", "log level: debug, info, warn or error")
	fs.StringVar(&o.format, "log-format", "text", "text, or json (one JSON object per line)")
	fs.StringVar(&o.metrics, "metrics", "", "`host:port` of the first node's operations endpoint (/metrics, /healthz, /readyz); empty: none")
	fs.StringVar(&o.trace, "trace-endpoint", "", "export the nodes' message spans to this OTLP/HTTP `URL`; empty: none")
	fs.BoolVar(&o.recover, "recover", false, "if the coordinator replicas lost their quorum, sign the recovery statement with the state directory's owner key, continuing from the state on disk")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags] [APP.yaml]\n", fs.Name())
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	o.path = "app.yaml"
	switch fs.NArg() {
	case 0:
	case 1:
		o.path = fs.Arg(0)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err := o.run(services); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// mainOptions are Main's command line.
type mainOptions struct {
	path, node, stateDir, level, format, metrics, trace string
	recover                                             bool
}

func (o *mainOptions) run(services []GoService) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.level)
	}
	hopts := &slog.HandlerOptions{Level: l}
	var h slog.Handler
	switch o.format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, hopts)
	default:
		return fmt.Errorf("--log-format %q: want text or json", o.format)
	}
	cfg, err := LoadConfig(o.path)
	if err != nil {
		return err
	}
	if o.stateDir != "" {
		if cfg.StateDir, err = filepath.Abs(o.stateDir); err != nil {
			return err
		}
	}
	cfg.Only, cfg.Out, cfg.Metrics, cfg.TraceEndpoint, cfg.Logger = o.node, os.Stdout, o.metrics, o.trace, slog.New(h)
	cfg.Recover = o.recover
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, cfg, services...)
}
