// Package app wires the water-network application: the sensors simulator,
// ingest, the analytics enclave, alerts and the dashboard, on one node or
// several, as an app.yaml describes. `cloister run` and `cloister bench`
// drive it, and so do its tests.
package app

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloister-dev/cloister/examples/water/monitor"
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
	// Security is "coordinator" (default), "channel" or "plain".
	Security string `yaml:"security"`
	// Sensors configures the simulator.
	Sensors SensorsConfig `yaml:"sensors"`
	// Dashboard is the host:port the dashboard listens on (port 0: any).
	Dashboard string `yaml:"dashboard"`
	// StateDir keeps JetStream's store, the enclave image and its
	// protected storage; empty: a temporary directory removed at exit.
	StateDir string `yaml:"state_dir"`
	// AckWait is how long a reading may stay unacknowledged before
	// JetStream delivers it again (default 10s).
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
	// RestartBackoff is the supervisor's first restart delay (default 200ms).
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

// Defaults for an app.yaml that leaves them out.
const (
	DefaultSensors = 10
	DefaultPeriod  = 500 * time.Millisecond
	DefaultAckWait = 10 * time.Second
)

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

// ParseConfig parses an app.yaml strictly (unknown fields are errors) and
// fills in defaults.
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("app config: %w", err)
	}
	if err := c.fill(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Default returns the configuration of examples/water/app.yaml: one node
// hosting everything.
func Default() *Config {
	c := &Config{Nodes: []NodeConfig{{Name: "n1", Services: allServices()}}, Dashboard: "127.0.0.1:8080"}
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
		return fmt.Errorf("security: %q (want coordinator, channel or plain)", c.Security)
	}
	if c.Sensors.Count == 0 {
		c.Sensors.Count = DefaultSensors
	}
	if c.Sensors.Count < 0 || c.Sensors.Count > 9999 {
		return fmt.Errorf("sensors.count: %d (want 1 to 9999)", c.Sensors.Count)
	}
	if c.Sensors.Period == 0 {
		c.Sensors.Period = DefaultPeriod
	}
	if c.Sensors.Period < time.Millisecond {
		return fmt.Errorf("sensors.period: %v (want at least 1ms)", c.Sensors.Period)
	}
	if s := c.Sensors.Leak.Sensor; s != "" {
		if err := monitor.ValidSensorID(s); err != nil {
			return fmt.Errorf("sensors.leak.sensor: %w", err)
		}
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Summary == 0 {
		c.Summary = time.Second
	}
	if c.Enclave.Backend == "" {
		c.Enclave.Backend = "process"
	}
	if c.Enclave.RestartBackoff == 0 {
		c.Enclave.RestartBackoff = 200 * time.Millisecond
	}
	if len(c.Nodes) == 0 {
		return errors.New("nodes: at least one node is needed")
	}
	placed := map[string]string{}
	names := map[string]bool{}
	for i, n := range c.Nodes {
		if n.Name == "" {
			return fmt.Errorf("nodes[%d]: a name is needed", i)
		}
		if names[n.Name] {
			return fmt.Errorf("nodes[%d]: node %q named twice", i, n.Name)
		}
		names[n.Name] = true
		for _, s := range n.Services {
			if !slices.Contains(allServices(), s) {
				return fmt.Errorf("nodes[%d].services: unknown service %q (want %v)", i, s, allServices())
			}
			if other, ok := placed[s]; ok {
				return fmt.Errorf("nodes[%d].services: %s is already placed on %s", i, s, other)
			}
			placed[s] = n.Name
		}
		if len(c.Nodes) > 1 && n.ClusterListen == "" {
			return fmt.Errorf("nodes[%d]: several nodes need cluster_listen (and routes) to form one bus", i)
		}
	}
	for _, s := range allServices() {
		if _, ok := placed[s]; !ok {
			return fmt.Errorf("nodes: service %s is not placed on any node", s)
		}
	}
	if placed[ServiceSensors] != placed[ServiceIngest] {
		return fmt.Errorf("nodes: sensors and ingest must share a node (it holds the JetStream store of the durable readings address)")
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
