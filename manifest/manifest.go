package manifest

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cloister-dev/cloister/attest"
)

// MaxSize is the largest manifest accepted, in bytes.
const MaxSize = 1 << 20

// Limits on the values a manifest may hold.
const (
	MinGeneratedSecret = 16
	MaxGeneratedSecret = 1024
	MaxSecretValue     = 4096
	MaxNameLen         = 64
	// MaxClients is how many clients a manifest may name. Every service
	// consuming an address open to clients receives them all in its grant,
	// which crosses the bus: 10,000 names and keys keep it well under
	// NATS's default maximum payload (1 MiB). Larger fleets want
	// credentials issued by a key the manifest names instead (not built).
	MaxClients = 10000
)

// Manifest is a parsed, validated manifest. Treat it as read-only: its hash
// is computed from these fields.
type Manifest struct {
	// Version grows with every update (≥ 1).
	Version uint64
	// Services by name.
	Services map[string]*Service
	// Addresses by address.
	Addresses map[string]*Address
	// Policy applies to every trusted service.
	Policy Policy
	// Owner signs updates; nil when the manifest cannot be updated.
	Owner *Owner
	// Clients are the outside clients that may open sessions to the
	// addresses open to clients: name → Ed25519 public key. A session's
	// handshake is signed with the client's private key, and the trusted
	// service learns the name of the client behind every message.
	Clients map[string]ed25519.PublicKey
	// Freshness, when set, turns on the coordinator's quorum memory: the
	// coordinator runs as Freshness.Replicas replicas that remember the
	// latest version of their own state and of every service instance's
	// sealed state, and refuse rolled-back state. Nil: one coordinator and
	// no rollback protection.
	Freshness *Freshness
}

// MaxReplicas bounds Freshness.Replicas.
const MaxReplicas = 7

// Freshness is the manifest's freshness section.
type Freshness struct {
	// Replicas is the number of coordinator replicas, 1 to MaxReplicas;
	// a quorum is Replicas/2+1 of them. With 1, every restart of the
	// coordinator is a lost quorum that only the owner's recovery
	// statement ends.
	Replicas int
	// Checkpoint is the longest time a service instance's state may go
	// unregistered: a rollback can undo at most the writes of the last
	// interval. 0 registers every batch of writes before its replies
	// leave the enclave.
	Checkpoint time.Duration
}

// MaxCheckpoint bounds Freshness.Checkpoint.
const MaxCheckpoint = time.Hour

// Replicas returns the number of coordinator replicas: Freshness.Replicas,
// or 1 without a freshness section.
func (m *Manifest) Replicas() int {
	if m.Freshness == nil {
		return 1
	}
	return m.Freshness.Replicas
}

// Service is one service of the application. A service with identities is
// trusted (it runs in an enclave); one without is regular.
type Service struct {
	// Name is the service's name (its key under services).
	Name string
	// Identities lists the enclave identities allowed to run the service:
	// any one suffices.
	Identities []Identity
	// Debug allows debug enclaves, whose memory the host can read.
	Debug bool
	// Secrets the coordinator hands to the service, by name.
	Secrets map[string]Secret
}

// Trusted reports whether the service runs in an enclave (has identities).
func (s *Service) Trusted() bool { return len(s.Identities) > 0 }

// Identity is one allowed enclave identity: an exact measurement, or a
// signer with a product ID. MinSVN applies to both.
type Identity struct {
	// MREnclave, when set, is the allowed measurement.
	MREnclave *[32]byte
	// MRSigner, when set, is the allowed signer (with ProductID).
	MRSigner *[32]byte
	// ProductID is the required ISV product ID (with MRSigner only).
	ProductID uint16
	// MinSVN is the lowest accepted ISV security version number.
	MinSVN uint16
}

// Secret is a secret for a trusted service: either Generate bytes the
// coordinator draws at random, or a Value the owner supplied.
type Secret struct {
	// Generate is the length in bytes of a key the coordinator draws (0 when
	// Value is set).
	Generate int
	// Value is the owner-supplied secret (nil when Generate is set).
	Value []byte
}

// Address is one bus address and the rights on it.
type Address struct {
	// Name is the bus address (its key under addresses).
	Name string
	// Secured addresses carry envelopes under address keys only trusted
	// services hold.
	Secured bool
	// Durable addresses are kept by the broker until consumed.
	Durable bool
	// Clients addresses accept client-session messages: requests and sends
	// that outside clients named in the manifest's clients sealed with HPKE
	// (secure.NewClientSession) to the client-channel key of the trusted
	// service consuming the address. Only trusted services may consume them.
	Clients bool
	// Consume, Send and Publish list the services with each right, sorted.
	Consume, Send, Publish []string
}

// Policy is the attestation policy shared by all trusted services.
type Policy struct {
	// AcceptedTCB lists the accepted TCB statuses, sorted; never empty
	// (the default is UpToDate).
	AcceptedTCB []attest.TCBStatus
	// AllowSimulation accepts simulated evidence, which promises nothing
	// against a malicious host.
	AllowSimulation bool
}

// Owner is the manifest owner's public key.
type Owner struct {
	// PublicKey is an *ecdsa.PublicKey on P-256 or an ed25519.PublicKey.
	PublicKey crypto.PublicKey
	der       []byte // PKIX
}

// Errors callers decide on.
var (
	// ErrInvalid is matched (errors.Is) by every validation error.
	ErrInvalid = errors.New("manifest: invalid")
	// ErrUnknownService: the service is not in the manifest.
	ErrUnknownService = errors.New("manifest: unknown service")
	// ErrNotTrusted: the service has no identities, so no enclave can be it.
	ErrNotTrusted = errors.New("manifest: service has no enclave identities")
)

// FieldError is one validation error: the field path, its position, and
// what is wrong.
type FieldError struct {
	// Path is the field path, e.g. "services.analytics.identities[0].mrenclave".
	Path string
	// Line and Column locate the field in the file (1-based; 0 if unknown).
	Line, Column int
	// Msg says what is wrong.
	Msg string
}

// Error returns "path (line N): message".
func (e *FieldError) Error() string {
	path := e.Path
	if path == "" {
		path = "manifest"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", path, e.Msg)
}

// Is makes every FieldError match [ErrInvalid].
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// FieldErrors returns the field errors err holds (from [Parse]), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// Service returns the named service or an error wrapping [ErrUnknownService].
func (m *Manifest) Service(name string) (*Service, error) {
	s, ok := m.Services[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, name)
	}
	return s, nil
}

// ServiceNames returns the service names, sorted.
func (m *Manifest) ServiceNames() []string {
	names := make([]string, 0, len(m.Services))
	for n := range m.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CanConsume reports whether service may consume address.
func (m *Manifest) CanConsume(service, address string) bool {
	a, ok := m.Addresses[address]
	return ok && slices.Contains(a.Consume, service)
}

// CanSend reports whether service may send (or make requests) to address.
func (m *Manifest) CanSend(service, address string) bool {
	a, ok := m.Addresses[address]
	return ok && slices.Contains(a.Send, service)
}

// CanPublish reports whether service may publish on address.
func (m *Manifest) CanPublish(service, address string) bool {
	a, ok := m.Addresses[address]
	return ok && slices.Contains(a.Publish, service)
}

// Right is what one service may do on one address.
type Right struct {
	// Address is the bus address.
	Address string
	// Secured, Durable and Clients are the address's properties.
	Secured, Durable, Clients bool
	// Consume, Send and Publish say which rights the service holds.
	Consume, Send, Publish bool
}

// AddressesFor returns the addresses on which service holds any right,
// sorted by address. The coordinator gives a trusted service the key of
// every secured address listed.
func (m *Manifest) AddressesFor(service string) []Right {
	var out []Right
	for name, a := range m.Addresses {
		r := Right{
			Address: name, Secured: a.Secured, Durable: a.Durable, Clients: a.Clients,
			Consume: slices.Contains(a.Consume, service),
			Send:    slices.Contains(a.Send, service),
			Publish: slices.Contains(a.Publish, service),
		}
		if r.Consume || r.Send || r.Publish {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Right) int {
		if a.Address < b.Address {
			return -1
		}
		if a.Address > b.Address {
			return 1
		}
		return 0
	})
	return out
}

// Policies returns one attestation policy per identity of service: claims
// are acceptable for the service if any of them accepts them.
func (m *Manifest) Policies(service string) ([]attest.Policy, error) {
	s, err := m.Service(service)
	if err != nil {
		return nil, err
	}
	if !s.Trusted() {
		return nil, fmt.Errorf("%w: %q", ErrNotTrusted, service)
	}
	out := make([]attest.Policy, 0, len(s.Identities))
	for _, id := range s.Identities {
		p := attest.Policy{
			MinSVN:          id.MinSVN,
			AllowDebug:      s.Debug,
			AcceptedTCB:     slices.Clone(m.Policy.AcceptedTCB),
			AllowSimulation: m.Policy.AllowSimulation,
		}
		if id.MREnclave != nil {
			p.MREnclaves = [][32]byte{*id.MREnclave}
		}
		if id.MRSigner != nil {
			v := *id.MRSigner
			p.MRSigner = &v
			p.ProductID = id.ProductID
		}
		out = append(out, p)
	}
	return out, nil
}

// ServicesFor returns the trusted services whose identities accept claims,
// sorted: which services an enclave with these claims may join as.
func (m *Manifest) ServicesFor(claims *attest.Claims) []string {
	var out []string
	for _, name := range m.ServiceNames() {
		if m.Services[name].Trusted() && m.Check(name, claims) == nil {
			out = append(out, name)
		}
	}
	return out
}

// Check returns nil if claims satisfy at least one of service's policies;
// otherwise an error joining why each policy refused (each a
// *attest.PolicyError, so errors.As finds the rule broken).
func (m *Manifest) Check(service string, claims *attest.Claims) error {
	ps, err := m.Policies(service)
	if err != nil {
		return err
	}
	var errs []error
	for i := range ps {
		err := ps[i].Check(claims)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("identity %d: %w", i, err))
	}
	return fmt.Errorf("manifest: claims match no identity of service %q: %w", service, errors.Join(errs...))
}
