package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted/secured"
)

// BenchmarkJoin measures a whole join with simulated evidence against the
// coordinator in its own process over an in-process bus: challenge, fresh
// key, evidence, join (verification, grant, HPKE seal, sealed counter
// write) and opening the grant.
func BenchmarkJoin(b *testing.B) {
	s := newBenchSystem(b)
	ctx := context.Background()
	iss := testRoot.Issuer(allowed())
	b.ReportAllocs()
	for b.Loop() {
		m, err := s.b.Request(ctx, provision.AddressChallenge, nil)
		if err != nil {
			b.Fatal(err)
		}
		var ch provision.Challenge
		if err := provision.Decode(m.Body(), &ch); err != nil {
			b.Fatal(err)
		}
		key, err := secure.NewServiceKey()
		if err != nil {
			b.Fatal(err)
		}
		ev, err := iss.Issue(ctx, provision.JoinReportData(key.PublicKeyBytes(), ch.Nonce))
		if err != nil {
			b.Fatal(err)
		}
		evb, _ := ev.MarshalBinary()
		body, _ := provision.Encode(provision.JoinRequest{Service: "analytics", PublicKey: key.PublicKeyBytes(), Nonce: ch.Nonce, Evidence: evb})
		m, err = s.b.Request(ctx, provision.AddressJoin, body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := secured.OpenGrant(key, "analytics", ch.Nonce, m.Body()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServiceKeyFetch measures fetching and verifying a service's
// channel key (what client.Client.ServiceKey does on a cache miss).
func BenchmarkServiceKeyFetch(b *testing.B) {
	s := newBenchSystem(b)
	ctx := context.Background()
	c, err := connect(s, s.hash)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := provision.Encode(provision.ServiceKeyRequest{Service: "analytics"})
	b.ReportAllocs()
	for b.Loop() {
		m, err := s.b.Request(ctx, provision.AddressServiceKey, body)
		if err != nil {
			b.Fatal(err)
		}
		var r provision.ServiceKeyResponse
		if err := provision.Decode(m.Body(), &r); err != nil {
			b.Fatal(err)
		}
		if !ed25519.Verify(c.SigningKey(), provision.ServiceKeyMessage(s.hash[:], "analytics", r.PublicKey), r.Signature) {
			b.Fatal("bad signature")
		}
		if _, err := secure.ParsePublicKey(r.PublicKey); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnect measures verifying the coordinator (client.Connect).
func BenchmarkConnect(b *testing.B) {
	s := newBenchSystem(b)
	for b.Loop() {
		if _, err := connect(s, s.hash); err != nil {
			b.Fatal(err)
		}
	}
}
