// Package app wires the water-network application: the sensors simulator,
// ingest, the analytics enclave, alerts and the dashboard, on one node or
// several, as an app.yaml describes. `cloister run` and `cloister bench`
// drive it, and so do its tests.
package app

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/node"
)

// Service names, as placement lists them.
const (
	ServiceSensors   = "sensors"
	ServiceIngest    = "ingest"
	ServiceAnalytics = "analytics"
	ServiceAlerts    = "alerts"
	ServiceDashboard = "dashboard"
)

// allServices lists every service of the application.
func allServices() []string {
	return []string{ServiceSensors, ServiceIngest, ServiceAnalytics, ServiceAlerts, ServiceDashboard}
}

// Security modes.
const (
	// SecurityChannel: every reading is sealed with the HPKE client channel
	// to the channel key analytics attests (simulated evidence with the
	// process backend); only the enclave can read it.
	SecurityChannel = "channel"
	// SecurityPlain: readings travel as plain JSON. Nothing is confidential.
	SecurityPlain = "plain"
	// SecurityCoordinator: the secured-address layer — a coordinator
	// enclave holds the application's manifest; analytics joins it and gets
	// its client-channel key in a grant only after the coordinator verified
	// its evidence against the manifest; the sensors verify the coordinator,
	// pin the manifest hash, and seal readings to the key it signs; the
	// trusted runtime opens them before the handler runs.
	SecurityCoordinator = "coordinator"
)

// Config is an app.yaml.
type Config struct {
	// Name names the application (default "water").
	Name string `yaml:"name"`
	// Program is the Go main package that runs this file, relative to it
	// ("." is examples/water): `cloister run` runs it.
	Program string `yaml:"program"`
	// Security is "coordinator" (default), "channel" or "plain".
	Security string `yaml:"security"`
	// Sensors configures the simulator.
	Sensors SensorsConfig `yaml:"sensors"`
	// Dashboard is the host:port the dashboard listens on (port 0: any;
	// default 127.0.0.1:8080). The host must be given: the dashboard never
	// listens on every interface unless told so (0.0.0.0).
	Dashboard string `yaml:"dashboard"`
	// StateDir keeps JetStream's store, the enclave images and their
	// protected storage (the coordinator's keys, analytics' sensor
	// states), so that a restarted node finds them; relative to the
	// app.yaml's directory. Empty: a temporary directory removed at exit
	// (nothing survives a restart).
	StateDir string `yaml:"state_dir"`
	// AckWait is how long a reading may stay unacknowledged before
	// JetStream delivers it again (default 10s, at least MinAckWait).
	AckWait time.Duration `yaml:"ack_wait"`
	// Enclave configures the analytics enclave.
	Enclave EnclaveConfig `yaml:"enclave"`
	// Nodes are the nodes and the services each hosts.
	Nodes []NodeConfig `yaml:"nodes"`
	// Summary is how often the one-line summary is printed (default 1s;
	// negative: never).
	Summary time.Duration `yaml:"summary"`
}

// SensorsConfig configures the simulated sensors.
type SensorsConfig struct {
	// Count is how many sensors there are (default 10), named s-001...
	Count int `yaml:"count"`
	// Period is the time between two readings of a sensor (default 500ms).
	Period time.Duration `yaml:"period"`
	// Leak scripts a leak; empty Sensor: none.
	Leak LeakConfig `yaml:"leak"`
}

// Rate returns the readings per second of all sensors together.
func (s SensorsConfig) Rate() float64 { return float64(s.Count) / s.Period.Seconds() }

// LeakConfig scripts a leak on one sensor.
type LeakConfig struct {
	Sensor string        `yaml:"sensor"`
	After  time.Duration `yaml:"after"`
}

// EnclaveConfig configures the analytics enclave.
type EnclaveConfig struct {
	// Backend is "process" (default) or "gramine".
	Backend string `yaml:"backend"`
	// Image is a prebuilt analytics image; empty: built on first use from
	// ./examples/water/analytics.
	Image string `yaml:"image"`
	// CoordinatorImage is a prebuilt coordinator image; empty: built on
	// first use from ./coordinator/image.
	CoordinatorImage string `yaml:"coordinator_image"`
	// RestartBackoff is the supervisor's first restart delay (default
	// 200ms; not negative).
	RestartBackoff time.Duration `yaml:"restart_backoff"`
}

// NodeConfig is one node.
type NodeConfig struct {
	Name string `yaml:"name"`
	// NATSListen is where NATS clients (cloister tap) connect; default
	// 127.0.0.1 on a free port.
	NATSListen string `yaml:"nats_listen"`
	// ClusterListen and Routes join the nodes into one NATS cluster. A
	// route may name another node of this file that runs in the same
	// process.
	ClusterListen string   `yaml:"cluster_listen"`
	Routes        []string `yaml:"routes"`
	// Services placed on this node.
	Services []string `yaml:"services"`
}

// Defaults for an app.yaml that leaves them out, and bounds.
const (
	DefaultSensors   = 10
	MaxSensors       = 9999
	DefaultPeriod    = 500 * time.Millisecond
	MinPeriod        = time.Millisecond
	DefaultAckWait   = 10 * time.Second
	DefaultDashboard = "127.0.0.1:8080"
	// MinAckWait is the shortest ack wait: below it JetStream would
	// redeliver readings that are still being handled.
	MinAckWait = time.Second
)

// ErrConfig is matched by every [*ConfigError].
var ErrConfig = application.ErrConfig

// ConfigError is a bad value in an app.yaml (or in a command-line flag
// overriding one): the field, its line in the file, and what is wrong,
// naming the value; the application package's, as app.yaml is one.
type ConfigError = application.ConfigError

func fieldErr(field, format string, a ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// LoadConfig reads and checks an app.yaml.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("app: %s: %w", path, err)
	}
	// Relative paths are the file's: the state stays where the file is,
	// wherever the command runs from.
	dir := filepath.Dir(path)
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		c.StateDir = filepath.Join(dir, c.StateDir)
	}
	if c.Enclave.Image != "" && !filepath.IsAbs(c.Enclave.Image) {
		c.Enclave.Image = filepath.Join(dir, c.Enclave.Image)
	}
	if c.Enclave.CoordinatorImage != "" && !filepath.IsAbs(c.Enclave.CoordinatorImage) {
		c.Enclave.CoordinatorImage = filepath.Join(dir, c.Enclave.CoordinatorImage)
	}
	return c, nil
}

// ParseConfig parses an app.yaml strictly — unknown fields, a second
// document, a number that is not whole where one is needed, and every
// invalid value are errors ([*ConfigError] naming the field and its line)
// — and fills in defaults.
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	root, err := application.DecodeStrict(raw, &c)
	if err != nil {
		return nil, fmt.Errorf("app config: %w", err)
	}
	if n := application.Lookup(root, "sensors.count"); n != nil {
		if n.ShortTag() != "!!int" {
			return nil, &ConfigError{Field: "sensors.count", Line: n.Line, Msg: fmt.Sprintf("%q is not a whole number", n.Value)}
		}
		if c.Sensors.Count == 0 {
			return nil, &ConfigError{Field: "sensors.count", Line: n.Line, Msg: fmt.Sprintf("0 (want 1 to %d)", MaxSensors)}
		}
	}
	if n := application.Lookup(root, "sensors.period"); n != nil && c.Sensors.Period == 0 {
		return nil, &ConfigError{Field: "sensors.period", Line: n.Line, Msg: fmt.Sprintf("%q (want at least %v)", n.Value, MinPeriod)}
	}
	if err := c.fill(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) && ce.Line == 0 {
			if n := application.Lookup(root, ce.Field); n != nil {
				ce.Line = n.Line
			}
		}
		return nil, err
	}
	return &c, nil
}

// Default returns the configuration of examples/water/app.yaml: one node
// hosting everything.
func Default() *Config {
	c := &Config{Nodes: []NodeConfig{{Name: "n1", Services: allServices()}}, Dashboard: DefaultDashboard}
	_ = c.fill()
	return c
}

// Check fills in defaults and checks the configuration again (after
// fields were changed, e.g. by command-line overrides).
func (c *Config) Check() error { return c.fill() }

func (c *Config) fill() error {
	if c.Name == "" {
		c.Name = "water"
	}
	if c.Security == "" {
		c.Security = SecurityCoordinator
	}
	if c.Security != SecurityChannel && c.Security != SecurityPlain && c.Security != SecurityCoordinator {
		return fieldErr("security", "%q (want coordinator, channel or plain)", c.Security)
	}
	if c.Sensors.Count == 0 {
		c.Sensors.Count = DefaultSensors
	}
	if c.Sensors.Count < 0 || c.Sensors.Count > MaxSensors {
		return fieldErr("sensors.count", "%d (want 1 to %d)", c.Sensors.Count, MaxSensors)
	}
	if c.Sensors.Period == 0 {
		c.Sensors.Period = DefaultPeriod
	}
	if c.Sensors.Period < MinPeriod {
		return fieldErr("sensors.period", "%v (want at least %v)", c.Sensors.Period, MinPeriod)
	}
	if s := c.Sensors.Leak.Sensor; s != "" {
		if err := monitor.ValidSensorID(s); err != nil {
			return fieldErr("sensors.leak.sensor", "%q: %v", s, err)
		}
		if !slices.Contains(c.SensorIDs(), s) {
			return fieldErr("sensors.leak.sensor", "%q is not one of the %d sensors (%s to %s)", s, c.Sensors.Count, SensorID(1), SensorID(c.Sensors.Count))
		}
	}
	if c.Sensors.Leak.After < 0 {
		return fieldErr("sensors.leak.after", "%v is negative", c.Sensors.Leak.After)
	}
	if c.Dashboard == "" {
		c.Dashboard = DefaultDashboard
	}
	if err := checkListen(c.Dashboard); err != nil {
		return fieldErr("dashboard", "%v", err)
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.AckWait < MinAckWait {
		return fieldErr("ack_wait", "%v (want at least %v: a shorter wait redelivers readings still being handled)", c.AckWait, MinAckWait)
	}
	if c.Summary == 0 {
		c.Summary = time.Second
	}
	if c.Enclave.Backend == "" {
		c.Enclave.Backend = node.BackendProcess
	}
	if b := c.Enclave.Backend; b != node.BackendProcess && b != node.BackendGramine {
		return fieldErr("enclave.backend", "%q (want %s or %s)", b, node.BackendProcess, node.BackendGramine)
	}
	if c.Enclave.RestartBackoff == 0 {
		c.Enclave.RestartBackoff = 200 * time.Millisecond
	}
	if c.Enclave.RestartBackoff < 0 {
		return fieldErr("enclave.restart_backoff", "%v is negative", c.Enclave.RestartBackoff)
	}
	if len(c.Nodes) == 0 {
		return fieldErr("nodes", "at least one node is needed")
	}
	var nodes []application.Node
	for _, n := range c.Nodes {
		nodes = append(nodes, application.Node{Name: n.Name, NATSListen: n.NATSListen, ClusterListen: n.ClusterListen, Routes: n.Routes})
	}
	if err := application.CheckNodes(nodes); err != nil {
		return err
	}
	placed := map[string]string{}
	for i, n := range c.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		for j, s := range n.Services {
			if !slices.Contains(allServices(), s) {
				return fieldErr(fmt.Sprintf("%s.services[%d]", at, j), "unknown service %q (want %v)", s, allServices())
			}
			if other, ok := placed[s]; ok {
				return fieldErr(fmt.Sprintf("%s.services[%d]", at, j), "%s is already placed on %s", s, other)
			}
			placed[s] = n.Name
		}
	}
	for _, s := range allServices() {
		if _, ok := placed[s]; !ok {
			return fieldErr("nodes", "service %s is not placed on any node", s)
		}
	}
	if placed[ServiceSensors] != placed[ServiceIngest] {
		return fieldErr("nodes", "sensors and ingest must share a node (it holds the JetStream store of the durable readings address)")
	}
	return nil
}

// checkListen checks a host:port the dashboard listens on: the host must
// be given (never every interface by default) and the port be a number
// from 0 to 65535.
func checkListen(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q: want host:port (e.g. 127.0.0.1:8080): %w", hostport, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host: name one (127.0.0.1 for this machine only, 0.0.0.0 for every interface)", hostport)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port %q (want 0 to 65535)", hostport, port)
	}
	return nil
}

// NodeOf returns the node hosting service.
func (c *Config) NodeOf(service string) string {
	for _, n := range c.Nodes {
		if slices.Contains(n.Services, service) {
			return n.Name
		}
	}
	return ""
}

// SensorIDs returns the sensors' IDs.
func (c *Config) SensorIDs() []string {
	ids := make([]string, c.Sensors.Count)
	for i := range ids {
		ids[i] = SensorID(i + 1)
	}
	return ids
}

// SensorID names sensor i (from 1): s-001, s-002, ...
func SensorID(i int) string { return fmt.Sprintf("s-%03d", i) }
