package trusted

import (
	"context"
	"log/slog"
	"strings"

	"github.com/cloister-dev/cloister/boundary"
)

// logHandler is an slog.Handler that sends records to the host as Log
// OCALLs.
type logHandler struct {
	s      *session
	level  slog.Leveler
	post   bool // send with Post: never block on I/O
	attrs  []boundary.Attr
	prefix string // group prefix, "a.b."
}

// Enabled reports whether l reaches Options.LogLevel.
func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle sends the record as a Log OCALL, attributes flattened to text.
func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	m := &boundary.Log{Level: r.Level, Message: r.Message, Attrs: make([]boundary.Attr, len(h.attrs), len(h.attrs)+r.NumAttrs())}
	copy(m.Attrs, h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		m.Attrs = appendAttr(m.Attrs, h.prefix, a)
		return true
	})
	if h.post {
		return h.s.conn.Post(m)
	}
	return h.s.conn.Send(m)
}

func appendAttr(l []boundary.Attr, prefix string, a slog.Attr) []boundary.Attr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return l
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			l = appendAttr(l, p, g)
		}
		return l
	}
	return append(l, boundary.Attr{Key: strings.ToValidUTF8(prefix+a.Key, "\uFFFD"), Value: a.Value.String()})
}

// WithAttrs returns a handler that adds as to every record.
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]boundary.Attr(nil), h.attrs...)
	for _, a := range as {
		n.attrs = appendAttr(n.attrs, h.prefix, a)
	}
	return &n
}

// WithGroup returns a handler that prefixes later keys with name + ".".
func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix += name + "."
	return &n
}

// postLog logs from the reading goroutine without blocking on I/O.
func (s *session) postLog(level slog.Level, msg string, args ...any) {
	h := &logHandler{s: s, level: s.opts.LogLevel, post: true}
	slog.New(h).Log(context.Background(), level, msg, args...)
}
