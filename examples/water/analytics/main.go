// Command analytics is the trusted half of the water-network application:
// an enclave image that reads the sensors' readings, which nobody else can.
//
//	water.analytics         a reading → monitor.Result (declassified)
//	water.analytics.attest  a 32-byte nonce → monitor.AttestResponse
//	water.analytics.status  monitor.StatusRequest → monitor.Status (counts only)
//
// Readings arrive sealed with the HPKE client channel (package secure).
// With a coordinator (the host names the service, analytics, in Init), the
// secured-address layer (package trusted/secured) joins it at start-up,
// receives the service's channel key and the sensors' credentials in its
// grant, and opens the readings of each sensor's authenticated session
// before this handler runs (secured.Client); a reading for another sensor than the
// session's client is refused (403). Without
// one, the enclave makes its own channel key on first start, keeps it in
// protected storage and opens the readings here; the sensors obtain that
// key from water.analytics.attest, bound to the enclave's measurement by
// attestation evidence. Analytics validates
// each reading, updates the sensor's rolling statistics in protected
// storage, and publishes declassified alerts (sensor, kind, severity, time)
// on water.alerts. With the Init configuration {"allow_plain": true} it also
// takes plain JSON readings (the benchmark's "trusted, plain" column).
//
// It imports only the trusted SDK, secure and the pure monitor package: no
// bus, no network stack.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/cloister-dev/cloister/boundary/shm"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// EnvAddress names the environment variable that moves the analytics
// addresses (ADDRESS, ADDRESS.attest, ADDRESS.status); default
// water.analytics.
const EnvAddress = "WATER_ANALYTICS_ADDRESS"

// config is the Init configuration the host passes.
type config struct {
	AllowPlain bool `json:"allow_plain"`
}

// storage adapts the runtime's protected storage to monitor.Store.
type storage struct{ rt *trusted.Runtime }

// Get implements monitor.Store.
func (s storage) Get(ctx context.Context, key string) ([]byte, bool, error) {
	return s.rt.Get(ctx, key)
}

// Put implements monitor.Store.
func (s storage) Put(ctx context.Context, key string, v []byte) error { return s.rt.Put(ctx, key, v) }

// jsonHeaders marks a body as JSON for the receiver; a fresh map each time,
// since headers handed to the runtime are not shared state.
func jsonHeaders() map[string]string { return map[string]string{wire.HeaderCodec: wire.CodecJSON} }

func main() {
	var (
		cfg      config
		key      *secure.ServiceKey
		info     []byte
		analyzer *monitor.Analyzer
	)
	app := trusted.New(trusted.Options{Workers: 8, SharedMemory: shm.Adopt, Layer: secured.Layer(secured.Options{}), OnInit: func(ctx context.Context, rt *trusted.Runtime) error {
		if c := rt.Config(); len(c) > 0 {
			if err := json.Unmarshal(c, &cfg); err != nil {
				return fmt.Errorf("analytics: configuration: %w", err)
			}
		}
		raw, found, err := rt.Get(ctx, "channel-key")
		if err != nil {
			return fmt.Errorf("analytics: load channel key: %w", err)
		}
		if found {
			if key, err = secure.ParseServiceKey(raw); err != nil {
				return fmt.Errorf("analytics: channel key: %w", err)
			}
		} else {
			if key, err = secure.NewServiceKey(); err != nil {
				return err
			}
			b, err := key.Bytes()
			if err != nil {
				return err
			}
			if err := rt.Put(ctx, "channel-key", b); err != nil {
				return fmt.Errorf("analytics: store channel key: %w", err)
			}
		}
		info = secure.ChannelInfo(monitor.ChannelService, rt.Identity().MREnclave)
		analyzer = monitor.NewAnalyzer(monitor.DefaultConfig(), storage{rt})
		return nil
	}})

	// The benchmark runs several analytics side by side under other
	// addresses (the host chooses them; addresses are public anyway).
	address := monitor.AddressAnalytics
	if a := os.Getenv(EnvAddress); a != "" {
		address = a
	}
	app.HandleFunc(address, func(ctx context.Context, c *trusted.Call) {
		body := c.Body()
		client, fromClient := secured.Client(c)
		if fromClient {
			// The trusted runtime opened it: a session of a client the
			// manifest names, the key from the coordinator's grant. A
			// sensor speaks only for itself (HandleFrom below).
		} else if c.Header(monitor.HeaderChannel) == monitor.ChannelHPKE {
			req, err := key.OpenRequest(info, body)
			if err != nil {
				analyzer.CountUnopened()
				c.Fail(400, "analytics: the reading does not open: "+err.Error())
				return
			}
			body = req.Plaintext
		} else if !cfg.AllowPlain {
			analyzer.CountUnopened()
			c.Fail(400, "analytics: readings must be sealed to the channel key")
			return
		}
		res, alerts, err := analyzer.HandleFrom(ctx, client, body)
		if errors.Is(err, monitor.ErrWrongSensor) {
			c.Logger().Warn("analytics: a reading for another sensor than its client's; refused")
			c.Fail(403, err.Error())
			return
		}
		if err != nil {
			// The error names the sensor; the host must not learn it.
			c.Fail(503, "analytics: protected storage failed for this reading; try again")
			return
		}
		for _, a := range alerts {
			b, _ := json.Marshal(a)
			if err := c.Publish(ctx, monitor.AddressAlerts, jsonHeaders(), b); err != nil {
				c.Logger().Warn("analytics: publishing an alert", "error", err)
			}
		}
		if c.ExpectsReply() {
			b, _ := json.Marshal(res)
			c.Reply(jsonHeaders(), b)
		}
	})

	app.HandleFunc(address+".attest", func(ctx context.Context, c *trusted.Call) {
		nonce := c.Body()
		if len(nonce) != 32 {
			c.Fail(400, "analytics: send a 32-byte nonce")
			return
		}
		pub := key.PublicKeyBytes()
		ev, err := c.Evidence(ctx, monitor.ChannelReportData(pub, nonce))
		if err != nil {
			c.Fail(503, "analytics: evidence: "+err.Error())
			return
		}
		b, _ := json.Marshal(monitor.AttestResponse{PublicKey: pub, EvidenceType: ev.Type, Quote: ev.Quote})
		c.Reply(jsonHeaders(), b)
	})

	app.HandleFunc(address+".status", func(ctx context.Context, c *trusted.Call) {
		var req monitor.StatusRequest
		if len(c.Body()) > 0 {
			if err := json.Unmarshal(c.Body(), &req); err != nil {
				c.Fail(400, "analytics: status request: "+err.Error())
				return
			}
		}
		st, err := analyzer.Status(ctx, req)
		if errors.Is(err, monitor.ErrStatusRequest) {
			c.Fail(400, err.Error())
			return
		}
		if err != nil {
			c.Fail(503, "analytics: protected storage failed while reading the status; try again")
			return
		}
		b, _ := json.Marshal(st)
		c.Reply(jsonHeaders(), b)
	})
	app.Main()
}
