package app

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/cloister-dev/cloister/node"
)

//go:embed dashboard.html
var dashboardHTML []byte

// startDashboard serves the dashboard on the listener Start opened on the
// configured address (a port in use failed Start before anything was
// written; there is no fallback to another address):
//
//	GET  /            the page (it polls /api/state every second)
//	GET  /api/state   State as JSON
//	POST /api/leak?sensor=ID   starts a leak on a sensor
func (a *App) startDashboard() error {
	l := a.ln
	if l == nil {
		return errors.New("app: dashboard: no listener (Start opens it)")
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
		if !slices.Contains(a.cfg.SensorIDs(), sensor) {
			http.Error(w, fmt.Sprintf("no sensor %q (there are %s to %s)", sensor, SensorID(1), SensorID(a.cfg.Sensors.Count)), http.StatusBadRequest)
			return
		}
		if err := a.InjectLeak(r.Context(), sensor); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "leak started on %s\n", sensor)
	})
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("water: dashboard stopped", "error", err)
		}
	}()
	return nil
}

// dashboardService is the dashboard as a service of its node: it serves
// from the node's start; Close stops it.
type dashboardService struct{ a *App }

// Start implements node.Service.
func (d dashboardService) Start(ctx context.Context, inst *node.Instance) error {
	return d.a.startDashboard()
}

// Stop implements node.Service.
func (d dashboardService) Stop(ctx context.Context) error { return nil }
