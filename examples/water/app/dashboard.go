package app

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

//go:embed dashboard.html
var dashboardHTML []byte

// startDashboard serves the dashboard on the configured address:
//
//	GET  /            the page (it polls /api/state every second)
//	GET  /api/state   State as JSON
//	POST /api/leak?sensor=ID   starts a leak on a sensor
func (a *App) startDashboard(ln *localNode) error {
	l, err := net.Listen("tcp", a.cfg.Dashboard)
	if err != nil {
		// Most likely the port is taken: any free port on the same host
		// beats not starting (the address is printed).
		host, _, _ := net.SplitHostPort(a.cfg.Dashboard)
		l2, err2 := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err2 != nil {
			return fmt.Errorf("app: dashboard: %w", err)
		}
		fmt.Fprintf(a.opts.Out, "dashboard: %s is not available (%v); using another port\n", a.cfg.Dashboard, err)
		l = l2
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(dashboardHTML)
	})
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.State())
	})
	mux.HandleFunc("POST /api/leak", func(w http.ResponseWriter, r *http.Request) {
		sensor := r.URL.Query().Get("sensor")
		if sensor == "" {
			http.Error(w, "want ?sensor=ID", http.StatusBadRequest)
			return
		}
		if err := a.InjectLeak(r.Context(), sensor); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "leak started on %s\n", sensor)
	})
	a.ln = l
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("water: dashboard stopped", "error", err)
		}
	}()
	return nil
}
