package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
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
}

func newRogue(t *testing.T) *rogue {
	t.Helper()
	platform, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{platform: platform}
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
		req, err := r.svc.OpenRequest(secure.ChannelInfo("svc", r.hash), m.Body())
		if err != nil {
			_ = m.Fail(400, err.Error())
			return
		}
		out, _ := req.SealReply(append([]byte("echo: "), req.Plaintext...))
		_ = m.Reply(out)
	})
	return b
}

func (r *rogue) options() client.Options {
	return client.Options{
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
	c, err := client.Connect(ctx, b, r.options())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Claims().Simulated() || c.ManifestVersion() != 1 {
		t.Fatalf("claims %v, version %d", c.Claims(), c.ManifestVersion())
	}
	out, err := c.Request(ctx, "svc.echo", "svc", []byte("hello"))
	if err != nil || string(out) != "echo: hello" {
		t.Fatalf("request: %q, %v", out, err)
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
	_, err := client.Connect(ctx, r.serve(t), r.options())
	untrusted(t, err, "report data")

	r = newRogue(t)
	r.otherKey = true
	_, err = client.Connect(ctx, r.serve(t), r.options())
	untrusted(t, err, "report data")

	r = newRogue(t)
	other := r.hash
	other[31] ^= 0x80
	r.serveHash = &other
	_, err = client.Connect(ctx, r.serve(t), r.options())
	untrusted(t, err, "manifest hash")
	var mm *client.ManifestMismatchError
	if !errors.Is(err, client.ErrManifestMismatch) || !errors.As(err, &mm) || mm.Served[31] != other[31] {
		t.Fatalf("mismatch error: %v", err)
	}

	r = newRogue(t)
	b := r.serve(t)
	o := r.options()
	o.CoordinatorPolicy.MREnclaves[0][0] ^= 1
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "policy")
	o = r.options()
	o.CoordinatorPolicy = attest.Policy{}
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "policy")
	o = r.options()
	o.AllowSimulation = false
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "evidence")
	o = r.options()
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	o.SimPlatformKeys = []*ecdsa.PublicKey{&stranger.PublicKey}
	_, err = client.Connect(ctx, b, o)
	untrusted(t, err, "evidence")
}

func TestServiceKeyBadSignature(t *testing.T) {
	r := newRogue(t)
	r.badKeySig = true
	b := r.serve(t)
	ctx := context.Background()
	c, err := client.Connect(ctx, b, r.options())
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
