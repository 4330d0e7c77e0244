// Command joinimage is a test enclave image: it joins the coordinator as
// the service named by JOIN_SERVICE (default analytics) through the trusted
// runtime's join (secured.Join) and serves
//
//	<service>.join  join (again) and answer a summary of the grant: epochs,
//	                SHA-256 fingerprints of the address keys and of the
//	                channel key (never the keys themselves)
//	<service>.echo  a client-session message: open it with the channel key
//	                and the grant's client credentials, and answer
//	                "echo: " + plaintext, sealed to the client
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// Summary is what <service>.join answers.
type Summary struct {
	Service    string            `json:"service"`
	Epoch      uint32            `json:"epoch"`
	Keys       map[string]string `json:"keys"` // "address/epoch" → SHA-256 of the key
	Secrets    map[string]string `json:"secrets"`
	ChannelKey string            `json:"channel_key"` // SHA-256 of the private key
	ChannelPub string            `json:"channel_pub"` // hex of the public key
}

type server struct {
	service  string
	mu       sync.Mutex
	grant    *provision.Grant
	channel  *secure.ServiceKey
	sessions *secure.SessionTable
}

func fingerprint(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func (s *server) join(ctx context.Context, c *trusted.Call) {
	g, err := secured.Join(ctx, c.Runtime, s.service)
	var ck *secure.ServiceKey
	if err == nil && g.ChannelKey != nil {
		ck, err = secure.ParseServiceKey(g.ChannelKey)
	}
	if err != nil {
		var je *secured.JoinError
		if errors.As(err, &je) {
			_ = c.Fail(je.Code, je.Message)
			return
		}
		_ = c.Fail(500, err.Error())
		return
	}
	s.mu.Lock()
	s.grant, s.channel = g, ck
	s.mu.Unlock()
	sum := Summary{Service: g.Service, Epoch: g.Epoch, Keys: map[string]string{}, Secrets: map[string]string{}}
	for _, a := range g.Addresses {
		for _, k := range a.Keys {
			sum.Keys[a.Address+"/"+itoa(k.Epoch)] = fingerprint(k.Key)
		}
	}
	for n, v := range g.Secrets {
		sum.Secrets[n] = fingerprint(v)
	}
	if ck != nil {
		sum.ChannelKey = fingerprint(g.ChannelKey)
		sum.ChannelPub = hex.EncodeToString(ck.PublicKeyBytes())
	}
	b, _ := json.Marshal(sum)
	_ = c.Reply(nil, b)
}

func itoa(n uint32) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (s *server) echo(_ context.Context, c *trusted.Call) {
	if _, fromClient := secured.Client(c); fromClient {
		// Joined by the runtime itself (the host named the service in
		// Init): it opened the session message and seals the reply.
		_ = c.Reply(nil, append([]byte("echo: "), c.Body()...))
		return
	}
	s.mu.Lock()
	g, ck := s.grant, s.channel
	s.mu.Unlock()
	if ck == nil {
		_ = c.Fail(503, "not joined yet")
		return
	}
	var hash [32]byte
	copy(hash[:], g.ManifestHash)
	clients := func(name string) (ed25519.PublicKey, bool) {
		k, ok := g.Clients[name]
		return ed25519.PublicKey(k), ok
	}
	req, err := s.sessions.Open(ck, secure.ChannelInfo(s.service, hash), clients, c.Body(), time.Now())
	if err != nil {
		code := 400
		if errors.Is(err, secure.ErrSessionUnknown) {
			code = wire.CodeSessionUnknown
		}
		_ = c.Fail(code, err.Error())
		return
	}
	defer req.Commit()
	if !c.ExpectsReply() {
		return
	}
	out, err := req.SealReply(append([]byte("echo: "), req.Plaintext...))
	if err != nil {
		_ = c.Fail(500, err.Error())
		return
	}
	_ = c.Reply(nil, out)
}

func main() {
	s := &server{service: os.Getenv("JOIN_SERVICE"), sessions: secure.NewSessionTable(secure.SessionOptions{})}
	if s.service == "" {
		s.service = "analytics"
	}
	// When the host names the service in Init (cloister node --enclave
	// service=S), the runtime joins at start-up too.
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{})})
	app.HandleFunc(s.service+".join", s.join)
	app.HandleFunc(s.service+".echo", s.echo)
	app.Main()
}
