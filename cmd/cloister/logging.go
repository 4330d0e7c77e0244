package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/spf13/pflag"
)

// logFlags are the logging flags of the long-running verbs (run, node,
// coordinator, bench).
type logFlags struct {
	level, format string
}

// register declares --log-level (with the verb's default) and
// --log-format on fs.
func (f *logFlags) register(fs *pflag.FlagSet, defaultLevel string) {
	fs.StringVar(&f.level, "log-level", defaultLevel, "debug, info, warn or error")
	fs.StringVar(&f.format, "log-format", "text", "text, or json (one JSON object per line, for log collectors)")
}

// handler returns the handler the flags ask for, writing to w, and the
// level; a bad value is a usage error naming the flag.
func (f *logFlags) handler(w io.Writer) (slog.Handler, slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, 0, &usageError{err: fmt.Errorf("--log-level: %w", err)}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.format {
	case "text", "":
		return slog.NewTextHandler(w, opts), level, nil
	case "json":
		return slog.NewJSONHandler(w, opts), level, nil
	}
	return nil, 0, &usageError{err: fmt.Errorf("--log-format %q: want text or json", f.format)}
}

// logger is handler's logger.
func (f *logFlags) logger(w io.Writer) (*slog.Logger, slog.Level, error) {
	h, level, err := f.handler(w)
	if err != nil {
		return nil, 0, err
	}
	return slog.New(h), level, nil
}

// announce tells the operator something a long-running verb does at start
// (an enclave's PID, the metrics address): as the line text on w, or, with
// --log-format json, as an INFO record of logger (so that every line of
// stderr is JSON).
func announce(w io.Writer, logger *slog.Logger, asJSON bool, text, msg string, attrs ...any) {
	if asJSON && logger != nil {
		logger.Info(msg, attrs...)
		return
	}
	fmt.Fprintln(w, text)
}

// json reports whether the flags ask for JSON logs.
func (f *logFlags) json() bool { return f.format == "json" }

// lineLogger is an io.Writer that logs each line written to it as an INFO
// record (msg: the line), for the text of tools a verb runs (go build) when
// the logs are JSON.
type lineLogger struct {
	l   *slog.Logger
	mu  sync.Mutex
	buf []byte
}

// Write implements io.Writer.
func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := bytes.TrimSpace(w.buf[:i]); len(line) > 0 {
			w.l.Info(string(line))
		}
		w.buf = w.buf[i+1:]
	}
}

// stderrFor returns env, or with JSON logs a copy whose stderr turns lines
// into log records of logger, so that every line the verb writes is JSON.
func (f *logFlags) stderrFor(env *cliEnv, logger *slog.Logger) *cliEnv {
	if !f.json() {
		return env
	}
	e := *env
	e.stderr = &lineLogger{l: logger}
	return &e
}
