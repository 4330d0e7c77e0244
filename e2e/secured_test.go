package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// EnvMarkers names the environment variable through which a checker
// supplies its own payload markers (comma-separated; at least 8 bytes
// each, no commas), used before the random ones.
const EnvMarkers = "CLOISTER_E2E_MARKERS"

// TestSecuredCluster is the acceptance run of secured addresses on a
// three-node cluster: the coordinator on node 0, alpha on node 1, beta on
// node 2, all real child processes; an eavesdropper on every server. The
// steps share the cluster and run in order.
func TestSecuredCluster(t *testing.T) {
	w := newWorld(t, true)
	// Markers: those a checker supplies first, then random ones.
	given := strings.FieldsFunc(os.Getenv(EnvMarkers), func(r rune) bool { return r == ',' })
	var markers []string
	mark := func() string {
		m := newMarker()
		if len(markers) < len(given) {
			m = given[len(markers)]
		}
		markers = append(markers, m)
		return m
	}

	t.Run("secured traffic between nodes", func(t *testing.T) {
		w.t = t
		// Request and reply: client → beta (node 2) → alpha (node 1) → back.
		m := mark()
		if got := string(w.mustAsk("beta", Op{Op: "request", To: "sec.echo", Body: m})); got != "echo: "+m {
			t.Fatalf("request: %q", got)
		}
		// Publish and send from beta to alpha.
		m2 := mark()
		w.mustAsk("beta", Op{Op: "publish", To: "sec.news", Body: m2})
		testenv.WaitFor(w.t.Context(), w.t, "alpha to see the publish", func() bool { _, last := w.seen("sec.news"); return last == m2 })
		m3 := mark()
		w.mustAsk("beta", Op{Op: "send", To: "sec.jobs", Body: m3})
		testenv.WaitFor(w.t.Context(), w.t, "alpha to see the send", func() bool { _, last := w.seen("sec.jobs"); return last == m3 })
		// Several in flight.
		for range 10 {
			m := mark()
			if got := string(w.mustAsk("beta", Op{Op: "request", To: "sec.echo", Body: m})); got != "echo: "+m {
				t.Fatalf("request: %q", got)
			}
		}
		if len(w.captured("cloister.pub.sec.news")) == 0 || len(w.captured("cloister.send.sec.echo")) == 0 {
			t.Fatal("the eavesdropper saw no secured traffic: is it listening?")
		}
	})

	t.Run("forged, replayed, tampered and regular messages are rejected", func(t *testing.T) {
		w.t = t
		news := w.captured("cloister.pub.sec.news")
		jobs := w.captured("cloister.send.sec.jobs")
		if len(news) != 1 || len(jobs) != 1 {
			t.Fatalf("captured %d publishes and %d sends", len(news), len(jobs))
		}
		nNews, _ := w.seen("sec.news")
		nJobs, _ := w.seen("sec.jobs")

		// A raw NATS client replays the captured envelopes, from another
		// server than the one they came through.
		w.inject(0, news[0].Subject, news[0].Header, news[0].Data)
		w.inject(2, jobs[0].Subject, jobs[0].Header, jobs[0].Data)
		// Flips a bit of the sequence number (a fresh one, so the replay
		// window does not catch it first) and of the ciphertext.
		seqFlip := bytes.Clone(news[0].Data)
		seqFlip[32] ^= 0x10
		w.inject(0, news[0].Subject, news[0].Header, seqFlip)
		ctFlip := bytes.Clone(jobs[0].Data)
		ctFlip[len(ctFlip)-20] ^= 0x01
		ctFlip[32] ^= 0x20
		w.inject(0, jobs[0].Subject, jobs[0].Header, ctFlip)
		// Publishes plaintext, and garbage.
		w.inject(1, news[0].Subject, news[0].Header, []byte("plaintext from a raw NATS client"))
		// A regular service on the bus sends to the secured address.
		if err := w.nodes[0].Bus().Send(context.Background(), "sec.jobs", []byte("plaintext from a regular service")); err != nil {
			t.Fatal(err)
		}
		// A regular service's request is failed with a clear reason.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := w.nodes[0].Bus().Request(ctx, "sec.echo", []byte("plaintext request"))
		var re *bus.ReplyError
		if !errors.As(err, &re) || re.Code != wire.CodeRejected || !strings.Contains(re.Message, "malformed") {
			t.Fatalf("plaintext request to a secured address: %v", err)
		}

		testenv.WaitFor(w.t.Context(), w.t, "alpha to count every rejection", func() bool {
			return w.rejected("sec.news", secured.ReasonReplay) == 1 && w.rejected("sec.jobs", secured.ReasonReplay) == 1 &&
				w.rejected("sec.news", secured.ReasonAuth) == 1 && w.rejected("sec.jobs", secured.ReasonAuth) == 1 &&
				w.rejected("sec.news", secured.ReasonMalformed) == 1 && w.rejected("sec.jobs", secured.ReasonMalformed) == 1 &&
				w.rejected("sec.echo", secured.ReasonMalformed) == 1
		})
		if n, _ := w.seen("sec.news"); n != nNews {
			t.Fatalf("alpha's sec.news handler ran %d times, want %d", n, nNews)
		}
		if n, _ := w.seen("sec.jobs"); n != nJobs {
			t.Fatalf("alpha's sec.jobs handler ran %d times, want %d", n, nJobs)
		}
	})

	t.Run("replays to a restarted service are still refused", func(t *testing.T) {
		w.t = t
		news := w.captured("cloister.pub.sec.news")[0]
		jobs := w.captured("cloister.send.sec.jobs")[0]
		// Alpha keeps its replay windows in protected storage (sealed
		// blobs in its state directory's journal until a checkpoint): wait
		// for the windows of its three secured addresses. Sec.jobs was
		// opened last, so once its blob exists the others hold what was
		// opened before it.
		testenv.WaitFor(w.t.Context(), w.t, "alpha's replay windows in its storage", func() bool {
			writes, _ := enclave.JournalWrites(filepath.Join(w.state, "alpha"))
			blobs, _ := filepath.Glob(filepath.Join(w.state, "alpha", "*.blob"))
			keys := map[string]bool{}
			for _, x := range writes {
				keys[x.Key] = true
			}
			return len(keys)+len(blobs) >= 3
		})
		pid := w.pid(1, "alpha")
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(w.t.Context(), w.t, "alpha's restart", func() bool {
			for _, e := range w.nodes[1].Enclaves() {
				if e.Name == "alpha" && e.PID != 0 && e.PID != pid && e.State == "up" {
					return true
				}
			}
			return false
		})
		w.inject(0, news.Subject, news.Header, news.Data)
		w.inject(2, jobs.Subject, jobs.Header, jobs.Data)
		testenv.WaitFor(w.t.Context(), w.t, "the restarted alpha to refuse the replays", func() bool {
			return w.rejected("sec.news", secured.ReasonReplay) == 1 && w.rejected("sec.jobs", secured.ReasonReplay) == 1
		})
		if n, _ := w.seen("sec.news"); n != 0 {
			t.Fatalf("the restarted alpha handled %d replayed publishes", n)
		}
		if n, _ := w.seen("sec.jobs"); n != 0 {
			t.Fatalf("the restarted alpha handled %d replayed sends", n)
		}
		// And it still serves fresh traffic.
		m := mark()
		if got := string(w.mustAsk("beta", Op{Op: "request", To: "sec.echo", Body: m})); got != "echo: "+m {
			t.Fatalf("request to the restarted alpha: %q", got)
		}
	})

	t.Run("coordinator killed and restarted", func(t *testing.T) {
		w.t = t
		pid := w.pid(0, "coordinator")
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Services hold their keys: secured traffic goes on meanwhile.
		m := mark()
		if got := string(w.mustAsk("beta", Op{Op: "request", To: "sec.echo", Body: m})); got != "echo: "+m {
			t.Fatalf("request while the coordinator restarts: %q", got)
		}
		testenv.WaitFor(w.t.Context(), w.t, "the coordinator's restart", func() bool {
			for _, e := range w.nodes[0].Enclaves() {
				if e.Name == "coordinator" && e.PID != 0 && e.PID != pid && e.State == "up" {
					return true
				}
			}
			return false
		})
		// A beta joining after the restart gets the same keys: it talks
		// with the alpha that joined before. The old beta leaves, so the
		// client reaches the new one.
		if err := w.deploy(0, "beta2", "beta", serviceImage); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := w.nodes[2].Undeploy(ctx, w.deployed["beta"]); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			m := mark()
			if got := string(w.mustAsk("beta", Op{Op: "request", To: "sec.echo", Body: m})); got != "echo: "+m {
				t.Fatalf("request from a beta joined after the restart: %q", got)
			}
		}
	})

	t.Run("old epoch after the grace period", func(t *testing.T) {
		w.t = t
		old := w.captured("cloister.pub.sec.news")[0]
		next, grace := uint32(2), "0s"
		body, _ := provision.Encode(provision.RotateRequest{NextEpoch: next, Grace: grace,
			Signature: ed25519.Sign(w.owner, provision.RotateMessage(w.hash[:], next, grace))})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := w.nodes[0].Bus().Request(ctx, provision.AddressRotate, body); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(w.t.Context(), w.t, "the services to re-join", func() bool {
			a, err1 := w.ask("alpha", Op{Op: "epoch"})
			b, err2 := w.ask("beta", Op{Op: "epoch"})
			return err1 == nil && err2 == nil && string(a) == "2" && string(b) == "2"
		})
		m := mark()
		w.mustAsk("beta", Op{Op: "publish", To: "sec.news", Body: m})
		testenv.WaitFor(w.t.Context(), w.t, "alpha to see the new epoch's publish", func() bool { _, last := w.seen("sec.news"); return last == m })
		n, _ := w.seen("sec.news")
		w.inject(1, old.Subject, old.Header, old.Data)
		testenv.WaitFor(w.t.Context(), w.t, "the old epoch's rejection", func() bool { return w.rejected("sec.news", secured.ReasonEpochRetired) == 1 })
		if got, _ := w.seen("sec.news"); got != n {
			t.Fatalf("alpha's handler ran on an old-epoch envelope")
		}
	})

	t.Run("join refused", func(t *testing.T) {
		w.t = t
		// The manifest lists another measurement for gamma.
		err := w.deploy(2, "gamma", "gamma", serviceImage)
		if err == nil || !strings.Contains(err.Error(), "not among the identities of service gamma") {
			t.Fatalf("an image whose measurement the manifest does not list: %v", err)
		}
		if !strings.Contains(w.logs.String(), "not among the identities") {
			t.Fatal("the refusal is not in the host's logs")
		}
		// The owner forbids simulation: simulated evidence is refused.
		cur, err := manifestyaml.Parse([]byte(w.manifest))
		if err != nil {
			t.Fatal(err)
		}
		next, err := manifestyaml.Parse([]byte(w.manifestText(2, false)))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := manifest.SignUpdate(w.owner, cur, next)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := provision.Encode(provision.ManifestUpdate{Manifest: next.Canonical(), Signature: sig})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := w.nodes[0].Bus().Request(ctx, provision.AddressManifestUpdate, body); err != nil {
			t.Fatal(err)
		}
		err = w.deploy(1, "alpha2", "alpha", serviceImage)
		if err == nil || !strings.Contains(err.Error(), "simulated evidence refused: the manifest forbids simulation") {
			t.Fatalf("simulated evidence when the manifest forbids simulation: %v", err)
		}
	})

	// The eavesdropper's verdict over the whole run, and the hosts' logs.
	w.t = t
	// A control: a marker sent in clear on a plain address is seen, so the
	// eavesdropper and the search work on this wire.
	control := newMarker()
	if err := w.nodes[2].Bus().Publish(context.Background(), "control.clear", []byte("x"+control)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the eavesdroppers to see the control marker", func() bool {
		if findMarker([]byte(w.tap.String()), control) == "" {
			return false
		}
		for _, s := range w.sniffers {
			for _, msg := range s.all() {
				if findMarker(msg.Data, control) != "" {
					return true
				}
			}
		}
		return false
	})
	total := 0
	for i, s := range w.sniffers {
		for _, msg := range s.all() {
			total++
			var hdr strings.Builder
			for k, vs := range msg.Header {
				hdr.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
			}
			for _, m := range markers {
				for _, part := range [][]byte{msg.Data, []byte(msg.Subject), []byte(msg.Reply), []byte(hdr.String())} {
					if enc := findMarker(part, m); enc != "" {
						t.Errorf("server %d: the marker appears %s on %s", i, enc, msg.Subject)
					}
				}
			}
		}
	}
	tapped := w.tap.String()
	for _, m := range markers {
		if enc := findMarker([]byte(tapped), m); enc != "" {
			t.Errorf("cloister tap shows a marker %s", enc)
		}
	}
	logs := w.logs.String()
	for _, m := range markers {
		if enc := findMarker([]byte(logs), m); enc != "" {
			t.Errorf("the hosts' logs hold a marker %s", enc)
		}
	}
	t.Logf("eavesdropper: %d messages on 3 servers, %d bytes from cloister tap, %d markers, %d bytes of host logs", total, len(tapped), len(markers), len(logs))
}
