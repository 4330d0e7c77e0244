// Command svcimage is the trusted service image of the end-to-end tests.
// It runs as whichever manifest service its host names in Init (through the
// secured-address layer): the coordinator's grant decides which of its handlers
// are served.
//
//	sec.echo    secured request:  "echo: " + body
//	sec.news    secured publish:  remembered (count, last body)
//	sec.jobs    secured send:     remembered (count, last body)
//	plain.echo  plain request:    "echo: " + body (the benchmark's baseline)
//	alpha.ask,  client channel:   a JSON Op from the test, sealed to the
//	beta.ask                      service's channel key; the answer is sealed
//	                              to the test
//
// Payloads never leave the enclave in clear: the test's markers travel
// sealed to this image, between images in envelopes, and back sealed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/boundary/shm"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
)

// Op is what the test asks a service to do, through its client channel.
type Op struct {
	// Op is request, send, publish, last, epoch or bench.
	Op string `json:"op"`
	// To is the address to act on (or, for last, to report on).
	To   string `json:"to"`
	Body string `json:"body,omitempty"`
	// N, InFlight and Size shape a bench: N requests of Size bytes, InFlight
	// at a time.
	N        int `json:"n,omitempty"`
	InFlight int `json:"in_flight,omitempty"`
	Size     int `json:"size,omitempty"`
}

// Seen is the answer of a last op.
type Seen struct {
	Count int    `json:"count"`
	Last  string `json:"last"`
}

type service struct {
	mu   sync.Mutex
	seen map[string]*Seen
}

func (s *service) remember(c *trusted.Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.seen[c.Address()]
	if v == nil {
		v = &Seen{}
		s.seen[c.Address()] = v
	}
	v.Count++
	v.Last = string(c.Body())
}

func (s *service) echo(_ context.Context, c *trusted.Call) {
	s.remember(c)
	c.Reply(nil, append([]byte("echo: "), c.Body()...))
}

func (s *service) ask(ctx context.Context, c *trusted.Call) {
	if _, fromClient := secured.Client(c); !fromClient {
		c.Fail(400, "client-channel requests only")
		return
	}
	var op Op
	if err := json.Unmarshal(c.Body(), &op); err != nil {
		c.Fail(400, "bad op")
		return
	}
	var out []byte
	var err error
	switch op.Op {
	case "request":
		var r *trusted.Response
		if r, err = c.Request(ctx, op.To, nil, []byte(op.Body), 10*time.Second); err == nil {
			out = r.Body
		}
	case "send":
		err = c.Send(ctx, op.To, nil, []byte(op.Body))
		out = []byte("ok")
	case "publish":
		err = c.Publish(ctx, op.To, nil, []byte(op.Body))
		out = []byte("ok")
	case "last":
		s.mu.Lock()
		v := Seen{}
		if p := s.seen[op.To]; p != nil {
			v = *p
		}
		s.mu.Unlock()
		out, err = json.Marshal(v)
	case "epoch":
		out = []byte(fmt.Sprint(secured.Epoch(c.Runtime)))
	case "bench":
		out, err = bench(ctx, c.Runtime, op)
	default:
		err = fmt.Errorf("unknown op %q", op.Op)
	}
	if err != nil {
		// The error names addresses and failure kinds, never payloads.
		c.Fail(500, err.Error())
		return
	}
	c.Reply(nil, out)
}

// bench makes op.N requests of op.Size bytes to op.To, op.InFlight at a
// time, and answers the elapsed nanoseconds.
func bench(ctx context.Context, rt *trusted.Runtime, op Op) ([]byte, error) {
	body := []byte(strings.Repeat("x", op.Size))
	next := make(chan struct{}, op.N)
	for range op.N {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range max(op.InFlight, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if _, err := rt.Request(ctx, op.To, nil, body, 10*time.Second); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return json.Marshal(time.Since(start).Nanoseconds())
}

func main() {
	s := &service{seen: map[string]*Seen{}}
	app := trusted.New(trusted.Options{Workers: 40, SharedMemory: shm.Adopt, Layer: secured.Layer(secured.Options{})})
	app.HandleFunc("sec.echo", s.echo)
	app.HandleFunc("plain.echo", s.echo)
	app.HandleFunc("sec.news", func(_ context.Context, c *trusted.Call) { s.remember(c) })
	app.HandleFunc("sec.jobs", func(_ context.Context, c *trusted.Call) { s.remember(c) })
	app.HandleFunc("alpha.ask", s.ask)
	app.HandleFunc("beta.ask", s.ask)
	app.Main()
}
