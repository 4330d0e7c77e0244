package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/wire"
)

// The real coordinator is exercised by package coordinator's tests (a child
// process); here a coordinator that misbehaves on purpose — as a
// compromised host could make one look — answers on an in-process bus, with
// real evidence, keys and signatures.

// rogue is a coordinator the test controls.
type rogue struct {
	hash     [32]byte
	sign     ed25519.PrivateKey
	platform *ecdsa.PrivateKey
	iss      *attest.SimIssuer
	svc      *secure.ServiceKey
	// Faults:
	otherNonce  bool // bind another nonce than the client's
	otherKey    bool // bind another signing key than the one sent
	badKeySig   bool // sign the service key with another key
	serveHash   *[32]byte
	measurement [32]byte

	// The trusted service's side of client sessions.
	mu       sync.Mutex
	sessions *secure.SessionTable
	clients  map[string]ed25519.PublicKey
	keys     map[string]ed25519.PrivateKey
	handled  map[string]int // "client/payload" → times handled
}

// credential makes a client credential the service knows.
func (r *rogue) credential(t *testing.T, name string) secure.Credential {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.clients[name], r.keys[name] = pub, priv
	r.mu.Unlock()
	return secure.Credential{Name: name, Key: priv}
}

// lastKey returns the private key last made for name.
func (r *rogue) lastKey(name string) ed25519.PrivateKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[name]
}

// restart makes the service forget every session, as a restart does.
func (r *rogue) restart(opts secure.SessionOptions) {
	r.mu.Lock()
	r.sessions = secure.NewSessionTable(opts)
	r.mu.Unlock()
}

func (r *rogue) lookup(name string) (ed25519.PublicKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.clients[name]
	return k, ok
}

func newRogue(t *testing.T) *rogue {
	t.Helper()
	platform, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{platform: platform, sessions: secure.NewSessionTable(secure.SessionOptions{}),
		clients: map[string]ed25519.PublicKey{}, keys: map[string]ed25519.PrivateKey{}, handled: map[string]int{}}
	rand.Read(r.hash[:])
	rand.Read(r.measurement[:])
	_, r.sign, _ = ed25519.GenerateKey(rand.Reader)
	if r.iss, err = attest.NewSimIssuer(attest.SimIdentity{MREnclave: r.measurement}, platform); err != nil {
		t.Fatal(err)
	}
	if r.svc, err = secure.NewServiceKey(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rogue) serve(t *testing.T) *bus.Bus {
	t.Helper()
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	reply := func(m *bus.Message, v any) {
		body, err := provision.Encode(v)
		if err != nil {
			t.Error(err)
		}
		_ = m.Reply(body)
	}
	handle := func(addr string, f func(ctx context.Context, m *bus.Message)) {
		if _, err := b.Consumer(addr, bus.HandlerFunc(f)); err != nil {
			t.Fatal(err)
		}
	}
	handle(provision.AddressAttest, func(ctx context.Context, m *bus.Message) {
		var req provision.AttestRequest
		if err := provision.Decode(m.Body(), &req); err != nil {
			_ = m.Fail(provision.CodeBadRequest, err.Error())
			return
		}
		hash := r.hash
		if r.serveHash != nil {
			hash = *r.serveHash
		}
		pub := r.sign.Public().(ed25519.PublicKey)
		nonce, bound := req.Nonce, pub
		if r.otherNonce {
			nonce = make([]byte, provision.NonceSize) // a replayed, earlier answer
		}
		if r.otherKey {
			_, other, _ := ed25519.GenerateKey(rand.Reader)
			bound = other.Public().(ed25519.PublicKey)
		}
		ev, err := r.iss.Issue(ctx, provision.AttestReportData(bound, hash[:], nonce))
		if err != nil {
			t.Error(err)
		}
		evb, _ := ev.MarshalBinary()
		reply(m, provision.AttestResponse{Evidence: evb, SigningKey: pub, ManifestHash: hash[:], ManifestVersion: 1})
	})
	handle(provision.AddressServiceKey, func(_ context.Context, m *bus.Message) {
		var req provision.ServiceKeyRequest
		_ = provision.Decode(m.Body(), &req)
		signer := r.sign
		if r.badKeySig {
			_, signer, _ = ed25519.GenerateKey(rand.Reader)
		}
		pub := r.svc.PublicKeyBytes()
		reply(m, provision.ServiceKeyResponse{Service: req.Service, PublicKey: pub, ManifestHash: r.hash[:],
			Signature: ed25519.Sign(signer, provision.ServiceKeyMessage(r.hash[:], req.Service, pub))})
	})
	// A trusted service answering on the client channel.
	handle("svc.echo", func(_ context.Context, m *bus.Message) {
		r.mu.Lock()
		tab := r.sessions
		r.mu.Unlock()
		req, err := tab.Open(r.svc, secure.ChannelInfo("svc", r.hash), r.lookup, m.Body(), time.Now())
		if err != nil {
			code := 400
			if errors.Is(err, secure.ErrSessionUnknown) {
				code = wire.CodeSessionUnknown
			}
			_ = m.Fail(code, err.Error())
			return
		}
		r.mu.Lock()
		r.handled[req.Client+"/"+string(req.Plaintext)]++
		r.mu.Unlock()
		out, _ := req.SealReply(append([]byte("echo: "+req.Client+": "), req.Plaintext...))
		req.Commit()
		_ = m.Reply(out)
	})
	return b
}

func (r *rogue) options(t *testing.T) client.Options {
	return client.Options{
		Credential:        r.credential(t, "sensor-1"),
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{r.measurement}},
		ManifestHash:      r.hash, AllowSimulation: true,
		SimPlatformKeys: []*ecdsa.PublicKey{&r.platform.PublicKey},
	}
}

func untrusted(t *testing.T, err error, check string) {
	t.Helper()
	var ue *client.UntrustedError
	if !errors.As(err, &ue) || ue.Check != check || !errors.Is(err, client.ErrUntrusted) {
		t.Fatalf("want the %q check to fail, got %v", check, err)
	}
}

func TestConnectAndRequest(t *testing.T) {
	r := newRogue(t)
	b := r.serve(t)
	ctx := context.Background()
	c, err := client.Connect(ctx, b, r.options(t))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Claims().Simulated() || c.ManifestVersion() != 1 {
		t.Fatalf("claims %v, version %d", c.Claims(), c.ManifestVersion())
	}
	out, err := c.Request(ctx, "svc.echo", "svc", []byte("hello"))
	if err != nil || string(out) != "echo: sensor-1: hello" {
		t.Fatalf("request: %q, %v", out, err)
	}
	out, err = c.Request(ctx, "svc.echo", "svc", []byte("again"))
	if err != nil || string(out) != "echo: sensor-1: again" {
		t.Fatalf("second request: %q, %v", out, err)
	}
	if st := r.sessions.Stats(); st.Handshakes != 1 {
		t.Fatalf("%d KEMs for two requests", st.Handshakes)
	}
	// The service restarts: the next request opens a new session by itself.
	r.restart(secure.SessionOptions{})
	out, err = c.Request(ctx, "svc.echo", "svc", []byte("after restart"))
	if err != nil || string(out) != "echo: sensor-1: after restart" {
		t.Fatalf("request after a restart: %q, %v", out, err)
	}
	// A message sealed for a forwarder, refused after a restart, is sealed
	// again by the client that made it, and by no other.
	sealed, err := c.Seal(ctx, "svc", []byte("queued"))
	if err != nil {
		t.Fatal(err)
	}
	r.restart(secure.SessionOptions{})
	var re *bus.ReplyError
	if _, err := b.Request(ctx, "svc.echo", sealed); !errors.As(err, &re) || re.Code != wire.CodeSessionUnknown {
		t.Fatalf("queued message after a restart: %v", err)
	}
	if _, err := c.As(r.credential(t, "sensor-2")).Reseal(ctx, "svc", sealed); !errors.Is(err, client.ErrNotMine) {
		t.Fatalf("another client resealed it: %v", err)
	}
	// The client restarts too: its saved sessions still let it seal the
	// queued message again.
	saved, err := c.MarshalSessions()
	if err != nil {
		t.Fatal(err)
	}
	c, err = client.Connect(ctx, b, r.options(t))
	if err != nil {
		t.Fatal(err)
	}
	c = c.As(secure.Credential{Name: "sensor-1", Key: r.lastKey("sensor-1")})
	if _, err := c.Reseal(ctx, "svc", sealed); !errors.Is(err, client.ErrNotMine) {
		t.Fatalf("resealed without the saved sessions: %v", err)
	}
	if err := c.RestoreSessions(saved); err != nil {
		t.Fatal(err)
	}
	again, err := c.Reseal(ctx, "svc", sealed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Request(ctx, "svc.echo", again); err != nil {
		t.Fatalf("resealed message: %v", err)
	}
	for k, n := range r.handled {
		if n != 1 {
			t.Fatalf("%s handled %d times", k, n)
		}
	}
	// Sealed to svc: another service name (another HPKE info) does not open.
	if _, err := c.Request(ctx, "svc.echo", "other", []byte("x")); !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("a request for another service opened: %v", err)
	}
}

func TestConnectRejects(t *testing.T) {
	ctx := context.Background()

	r := newRogue(t)
	r.otherNonce = true
	_, err := client.Connect(ctx, r.serve(t), r.options(t))
	untrusted(t, err, "report data")

	r = newRogue(t)
	r.otherKey = true
	_, err = client.Connect(ctx, r.serve(t), r.options(t))
	untrusted(t, err, "report data")

	r = newRogue(t)
	other := r.hash
	other[31] ^= 0x80
	r.serveHash = &other
	_, err = client.Connect(ctx, r.serve(t), r.options(t))
	untrusted(t, err, "manifest hash")
	var mm *client.ManifestMismatchError
	if !errors.Is(err, client.ErrManifestMismatch) || !errors.As(err, &mm) || mm.Served[31] != other[31] {
		t.Fatalf("mismatch error: %v", err)
	}

	r = newRogue(t)
	b := r.serve(t)
	o := r.options(t)
	o.CoordinatorPolicy.MREnclaves[0][0] ^= 1
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "policy")
	o = r.options(t)
	o.CoordinatorPolicy = attest.Policy{}
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "policy")
	o = r.options(t)
	o.AllowSimulation = false
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "evidence")
	o = r.options(t)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	o.SimPlatformKeys = []*ecdsa.PublicKey{&stranger.PublicKey}
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "evidence")
}

// Many clients against a small session table: sessions are evicted while
// their clients stream, and every message is handled exactly once.
func TestSessionEvictionLosesNothing(t *testing.T) {
	r := newRogue(t)
	r.restart(secure.SessionOptions{MaxSessions: 3})
	b := r.serve(t)
	ctx := context.Background()
	c, err := client.Connect(ctx, b, r.options(t))
	if err != nil {
		t.Fatal(err)
	}
	const clients, each = 12, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		cc := c.As(r.credential(t, fmt.Sprintf("sensor-%02d", i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				want := fmt.Sprintf("echo: %s: reading %d", cc.Credential(), j)
				out, err := cc.Request(ctx, "svc.echo", "svc", fmt.Appendf(nil, "reading %d", j))
				if err != nil || string(out) != want {
					errs <- fmt.Errorf("%s reading %d: %q %v", cc.Credential(), j, out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.handled) != clients*each {
		t.Fatalf("%d messages handled, want %d", len(r.handled), clients*each)
	}
	for k, n := range r.handled {
		if n != 1 {
			t.Fatalf("%s handled %d times", k, n)
		}
	}
	if st := r.sessions.Stats(); st.Evicted == 0 {
		t.Fatalf("no session was evicted: %+v", st)
	}
}

func TestServiceKeyBadSignature(t *testing.T) {
	r := newRogue(t)
	r.badKeySig = true
	b := r.serve(t)
	ctx := context.Background()
	c, err := client.Connect(ctx, b, r.options(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServiceKey(ctx, "svc"); !errors.Is(err, client.ErrBadSignature) {
		t.Fatalf("service key with a bad signature: %v", err)
	}
	if err := c.Send(ctx, "svc.echo", "svc", []byte("x")); !errors.Is(err, client.ErrBadSignature) {
		t.Fatalf("send with a bad key: %v", err)
	}
}
