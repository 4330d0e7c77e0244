package boundary

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// Type is a frame type. ECALL types (host → enclave) are below 0x40, OCALL
// types (enclave → host) from 0x40 on.
type Type uint8

// Frame types.
const (
	TypeInit           Type = 0x01
	TypeDeliver        Type = 0x02
	TypeRequestResult  Type = 0x03
	TypeStoreResult    Type = 0x04
	TypeEvidenceResult Type = 0x05
	TypeHealth         Type = 0x06
	TypeShutdown       Type = 0x07

	TypeReady        Type = 0x40
	TypeReply        Type = 0x41
	TypeFail         Type = 0x42
	TypeSend         Type = 0x43
	TypePublish      Type = 0x44
	TypeRequest      Type = 0x45
	TypeLog          Type = 0x46
	TypeStorePut     Type = 0x47
	TypeStoreGet     Type = 0x48
	TypeGetEvidence  Type = 0x49
	TypeHealthStatus Type = 0x4a
	TypeStopped      Type = 0x4b
	TypeFatal        Type = 0x4c
	TypeDone         Type = 0x4d
)

// frameTypes name each frame type and make an empty message of it.
var frameTypes = [256]struct {
	name string
	make func() Message
}{
	TypeInit: {"Init", maker[Init]}, TypeDeliver: {"Deliver", maker[Deliver]},
	TypeRequestResult: {"RequestResult", maker[RequestResult]}, TypeStoreResult: {"StoreResult", maker[StoreResult]},
	TypeEvidenceResult: {"EvidenceResult", maker[EvidenceResult]}, TypeHealth: {"Health", maker[Health]},
	TypeShutdown: {"Shutdown", maker[Shutdown]}, TypeReady: {"Ready", maker[Ready]}, TypeReply: {"Reply", maker[Reply]},
	TypeFail: {"Fail", maker[Fail]}, TypeSend: {"Send", maker[Send]}, TypePublish: {"Publish", maker[Publish]},
	TypeRequest: {"Request", maker[Request]}, TypeLog: {"Log", maker[Log]}, TypeStorePut: {"StorePut", maker[StorePut]},
	TypeStoreGet: {"StoreGet", maker[StoreGet]}, TypeGetEvidence: {"GetEvidence", maker[GetEvidence]},
	TypeHealthStatus: {"HealthStatus", maker[HealthStatus]}, TypeStopped: {"Stopped", maker[Stopped]},
	TypeFatal: {"Fatal", maker[Fatal]}, TypeDone: {"Done", maker[Done]},
}

func maker[T any, P interface {
	*T
	Message
}]() Message {
	return P(new(T))
}

// String returns the type's name, e.g. "Deliver".
func (t Type) String() string {
	if n := frameTypes[t].name; n != "" {
		return n
	}
	return fmt.Sprintf("Type(%#02x)", uint8(t))
}

// IsECALL reports whether t is a host → enclave frame type.
func (t Type) IsECALL() bool { return t < 0x40 }

// Message is one frame's content: a pointer to one of the frame structs of
// this package (*Init, *Deliver, …).
type Message interface {
	// Type returns the frame type.
	Type() Type
	// fields encodes or decodes the payload (see codec).
	fields(c *codec)
}

// newMessage returns an empty message of type t (nil for an unknown type).
func newMessage(t Type) Message {
	if mk := frameTypes[t].make; mk != nil {
		return mk()
	}
	return nil
}

// ---- enums ----

// FailKind says who failed a delivery.
type FailKind uint8

// Fail kinds.
const (
	// FailApplication: the handler called Fail(code, message).
	FailApplication FailKind = 1
	// FailPanic: the handler panicked; Message holds the panic value.
	FailPanic FailKind = 2
	// FailNoHandler: no handler is registered for the address.
	FailNoHandler FailKind = 3
	// FailShuttingDown: the enclave is draining after Shutdown.
	FailShuttingDown FailKind = 4
	// FailOverloaded: the enclave's delivery queue is full.
	FailOverloaded FailKind = 5
	// FailInternal: the trusted runtime failed (e.g. could not open a
	// secured payload).
	FailInternal FailKind = 6
)

var failKindNames = [...]string{"", "application", "panic", "no-handler", "shutting-down", "overloaded", "internal"}

// String returns the kind's name, e.g. "panic".
func (k FailKind) String() string {
	if k > 0 && int(k) < len(failKindNames) {
		return failKindNames[k]
	}
	return fmt.Sprintf("FailKind(%d)", uint8(k))
}

// SealMode tells the enclave where its sealing keys come from. The enclave
// decides in the end: under Gramine it always uses the hardware keys and
// refuses SealSimulated, since the host must not be able to downgrade it.
type SealMode uint8

// Seal modes.
const (
	SealAuto      SealMode = 0 // Gramine keys if present, simulated otherwise
	SealSimulated SealMode = 1 // platform secret + the identity in Init (promises nothing)
	SealGramine   SealMode = 2 // /dev/attestation/keys; fail if absent
)

// ---- ECALLs ----

// Identity is the enclave identity as the host measured or was told it.
// Under simulation it is what the seal keys are derived from; under SGX the
// enclave ignores it for sealing (the CPU knows better).
type Identity struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ProductID uint16
	SVN       uint16
}

// Init is the first frame after the handshake. It carries everything the
// host tells an image.
//
// Payload: MREnclave [32], MRSigner [32], ProductID u16, SVN u16, Name
// string, Instance u32, SealMode u8, SealPolicy u8 (0 = image default,
// 1 MRENCLAVE, 2 MRSIGNER), SealSecret bytes, Config bytes, Workers u32,
// Service string.
type Init struct {
	Identity Identity
	// Name is the image/service name, for logs.
	Name string
	// Instance numbers instances of one image on a host.
	Instance uint32
	// SealMode and SealPolicy select the seal key source (see SealMode).
	SealMode   SealMode
	SealPolicy uint8
	// SealSecret is the simulated platform secret; empty means the enclave
	// loads the per-machine secret file itself. Ignored under Gramine.
	SealSecret []byte
	// Config is the image's own configuration, opaque to the protocol.
	Config []byte
	// Workers is the handler concurrency the host asks for (0: the
	// image's default; at most MaxWorkers). An image that fixes its own
	// keeps it.
	Workers uint32
	// Service is the manifest service the image is to join the
	// coordinator as ("" for none); an image that names its own keeps it.
	Service string
}

// MaxWorkers is the largest Init.Workers accepted.
const MaxWorkers = 4096

// Environment variables of the boundary's set-up. They are not settings
// for the image (those travel in Init): EnvFD and shm's region name the
// descriptors the process inherits, and EnvGramineSeal is fixed in a
// Gramine manifest, so it is measured with the image.
const (
	// EnvFD names the file descriptors that carry the protocol: "3" (one
	// bidirectional descriptor) or "3,4" (read, write). Unset: stdin and
	// stdout.
	EnvFD = "CLOISTER_BOUNDARY_FD"
	// EnvGramineSeal is "gramine" in a Gramine manifest: the image then
	// insists on Gramine's seal keys whatever Init says.
	EnvGramineSeal = "CLOISTER_SEAL"
)

// Type implements Message.
func (*Init) Type() Type { return TypeInit }

func (m *Init) fields(c *codec) {
	c.fixed("mrenclave", m.Identity.MREnclave[:])
	c.fixed("mrsigner", m.Identity.MRSigner[:])
	c.u16("product_id", &m.Identity.ProductID)
	c.u16("svn", &m.Identity.SVN)
	c.str("name", &m.Name, c.lim.MaxString, strUTF8)
	u32(c, "instance", &m.Instance)
	u8(c, "seal_mode", &m.SealMode)
	c.check(m.SealMode <= SealGramine, "seal_mode", m.SealMode)
	u8(c, "seal_policy", &m.SealPolicy)
	c.check(m.SealPolicy <= 2, "seal_policy", m.SealPolicy)
	c.bytes("seal_secret", &m.SealSecret)
	c.bytes("config", &m.Config)
	u32(c, "workers", &m.Workers)
	if m.Workers > MaxWorkers {
		c.fail("workers", fmt.Errorf("%w: %d (at most %d)", ErrInvalidValue, m.Workers, MaxWorkers))
	}
	c.str("service", &m.Service, c.lim.MaxString, strUTF8)
}

// Deliver hands a bus message to the enclave.
//
// Payload: Token u64, Kind u8, Timeout duration, Address string, Headers,
// Body bytes.
type Deliver struct {
	// Token correlates the answer. A request has a non-zero token and is
	// answered by one Reply or Fail. A send or publish has token 0 (no
	// answer), or a non-zero token when the host must learn that it was
	// handled (to acknowledge a durable message): it is answered by one
	// Done when its handler returned, or one Fail when it was refused or
	// the handler panicked.
	Token   uint64
	Kind    wire.Kind
	Timeout time.Duration // the requester's remaining time; 0 = none
	Address string
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*Deliver) Type() Type { return TypeDeliver }

func (m *Deliver) fields(c *codec) {
	c.id64("token", &m.Token)
	u8(c, "kind", &m.Kind)
	c.check(m.Kind >= wire.KindSend && m.Kind <= wire.KindRequest, "kind", m.Kind)
	if m.Kind == wire.KindRequest && m.Token == 0 {
		c.fail("token", fmt.Errorf("%w: a request needs a non-zero token", ErrInvalidValue))
	}
	c.duration("timeout", &m.Timeout)
	c.address("address", &m.Address)
	c.headers("headers", &m.Headers)
	c.bytes("body", &m.Body)
}

// RequestResult answers a Request OCALL.
//
// Payload: CallID u64, Failure u8, Code i32, Message string, Headers, Body.
type RequestResult struct {
	CallID  uint64
	Failure wire.Failure // wire.FailureNone on success
	Code    int32        // the recipient's code for wire.FailureRecipient
	Message string
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*RequestResult) Type() Type { return TypeRequestResult }

func (m *RequestResult) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	u8(c, "failure", &m.Failure)
	c.check(m.Failure <= wire.MaxFailure, "failure", m.Failure)
	u32(c, "code", &m.Code)
	c.str("message", &m.Message, c.lim.MaxString, 0)
	c.headers("headers", &m.Headers)
	c.bytes("body", &m.Body)
}

// StoreResult answers a StorePut (Found is false, Blob empty) or a StoreGet.
//
// Payload: CallID u64, Found bool, Error string, Blob bytes.
type StoreResult struct {
	CallID uint64
	Found  bool   // StoreGet: the key exists
	Error  string // non-empty: the host could not store or load
	Blob   []byte // StoreGet: the sealed blob
}

// Type implements Message.
func (*StoreResult) Type() Type { return TypeStoreResult }

func (m *StoreResult) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.boolean("found", &m.Found)
	c.str("error", &m.Error, c.lim.MaxString, 0)
	c.bytes("blob", &m.Blob)
}

// EvidenceResult answers GetEvidence.
//
// Payload: CallID u64, EvidenceType string, Error string, Quote bytes.
type EvidenceResult struct {
	CallID       uint64
	EvidenceType string // e.g. "simulated", "sgx-dcap"
	Error        string // non-empty: no evidence
	Quote        []byte
}

// Type implements Message.
func (*EvidenceResult) Type() Type { return TypeEvidenceResult }

func (m *EvidenceResult) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.str("evidence_type", &m.EvidenceType, c.lim.MaxString, strUTF8)
	c.str("error", &m.Error, c.lim.MaxString, 0)
	c.bytes("quote", &m.Quote)
}

// Health asks for a HealthStatus with the same ID. Payload: ID u64.
type Health struct{ ID uint64 }

// Type implements Message.
func (*Health) Type() Type { return TypeHealth }

func (m *Health) fields(c *codec) { c.id64("id", &m.ID) }

// Shutdown asks the enclave to stop taking deliveries, drain for at most
// Grace (0 = the enclave's default) and answer with Stopped.
//
// Payload: Grace duration, Reason string.
type Shutdown struct {
	Grace  time.Duration
	Reason string
}

// Type implements Message.
func (*Shutdown) Type() Type { return TypeShutdown }

func (m *Shutdown) fields(c *codec) {
	c.duration("grace", &m.Grace)
	c.str("reason", &m.Reason, c.lim.MaxString, 0)
}

// ---- OCALLs ----

// Ready answers Init: the enclave is serving.
//
// Payload: Workers u32, Addresses string list.
type Ready struct {
	Workers   uint32   // handler workers (concurrent deliveries)
	Addresses []string // addresses with a registered handler
}

// Type implements Message.
func (*Ready) Type() Type { return TypeReady }

func (m *Ready) fields(c *codec) {
	u32(c, "workers", &m.Workers)
	c.strings("addresses", &m.Addresses, c.lim.MaxAddress)
}

// Reply answers a Deliver with a reply.
//
// Payload: Token u64, Headers, Body.
type Reply struct {
	Token   uint64
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*Reply) Type() Type { return TypeReply }

func (m *Reply) fields(c *codec) {
	c.token("token", &m.Token)
	c.headers("headers", &m.Headers)
	c.bytes("body", &m.Body)
}

// Done answers a send or publish Deliver that carried a token: its handler
// has returned.
//
// Payload: Token u64.
type Done struct {
	Token uint64
}

// Type implements Message.
func (*Done) Type() Type { return TypeDone }

func (m *Done) fields(c *codec) { c.token("token", &m.Token) }

// Fail answers a Deliver with a failure.
//
// Payload: Token u64, Kind u8, Code i32, Message string.
type Fail struct {
	Token   uint64
	Kind    FailKind
	Code    int32
	Message string
}

// Type implements Message.
func (*Fail) Type() Type { return TypeFail }

func (m *Fail) fields(c *codec) {
	c.token("token", &m.Token)
	u8(c, "kind", &m.Kind)
	c.check(m.Kind >= FailApplication && m.Kind <= FailInternal, "kind", m.Kind)
	u32(c, "code", &m.Code)
	c.str("message", &m.Message, c.lim.MaxString, 0)
}

// Send asks the host to send a message point to point (no reply).
//
// Payload: Address string, Headers, Body.
type Send struct {
	Address string
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*Send) Type() Type { return TypeSend }

func (m *Send) fields(c *codec) {
	c.address("address", &m.Address)
	c.headers("headers", &m.Headers)
	c.bytes("body", &m.Body)
}

// Publish asks the host to publish a message to every consumer of Address.
// Same payload as Send.
type Publish struct {
	Address string
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*Publish) Type() Type { return TypePublish }

func (m *Publish) fields(c *codec) { (*Send)(m).fields(c) }

// Request asks the host to make a bus request; the answer comes back as a
// RequestResult with the same CallID.
//
// Payload: CallID u64, Timeout duration, Address string, Headers, Body.
type Request struct {
	CallID  uint64
	Timeout time.Duration // 0 = the host's default
	Address string
	Headers map[string]string
	Body    []byte
}

// Type implements Message.
func (*Request) Type() Type { return TypeRequest }

func (m *Request) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.duration("timeout", &m.Timeout)
	c.address("address", &m.Address)
	c.headers("headers", &m.Headers)
	c.bytes("body", &m.Body)
}

// Attr is one log attribute, already formatted as text.
type Attr struct{ Key, Value string }

// Log is a log record from inside the enclave.
//
// Payload: Level i32 (slog.Level), Message string, attrs (u32 count +
// key string, value string pairs).
type Log struct {
	Level   slog.Level
	Message string
	Attrs   []Attr
}

// Type implements Message.
func (*Log) Type() Type { return TypeLog }

func (m *Log) fields(c *codec) {
	level := int32(m.Level)
	u32(c, "level", &level)
	c.str("message", &m.Message, c.lim.MaxString, 0)
	n := c.count("attrs", len(m.Attrs), c.lim.MaxHeaders, 8)
	if c.enc {
		for _, a := range m.Attrs {
			c.str("attrs", &a.Key, 0, 0)
			c.str("attrs", &a.Value, 0, 0)
		}
		return
	}
	m.Level = slog.Level(level)
	if n > 0 {
		m.Attrs = make([]Attr, n)
	}
	for i := range m.Attrs {
		c.strAt("attrs", i, ".key", &m.Attrs[i].Key, c.lim.MaxString, strUTF8)
		c.strAt("attrs", i, ".value", &m.Attrs[i].Value, c.lim.MaxString, 0)
	}
}

// StorePut asks the host to store a sealed blob under Key (replacing any
// previous one). With a non-zero CallID it is answered by StoreResult; with
// CallID 0 it is posted: never answered, and durable before the host acts
// on any later frame of the stream (see "Ordered store writes" in the
// package doc).
//
// Payload: CallID u64, Key string, Blob bytes.
type StorePut struct {
	CallID uint64 // 0: posted (no StoreResult)
	Key    string
	Blob   []byte
}

// Type implements Message.
func (*StorePut) Type() Type { return TypeStorePut }

func (m *StorePut) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.str("key", &m.Key, c.lim.MaxString, strUTF8|strNonEmpty)
	c.bytes("blob", &m.Blob)
}

// StoreGet asks the host for the blob stored under Key; answered by
// StoreResult.
//
// Payload: CallID u64, Key string.
type StoreGet struct {
	CallID uint64
	Key    string
}

// Type implements Message.
func (*StoreGet) Type() Type { return TypeStoreGet }

func (m *StoreGet) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.str("key", &m.Key, c.lim.MaxString, strUTF8|strNonEmpty)
}

// GetEvidence asks the host for attestation evidence binding ReportData;
// answered by EvidenceResult.
//
// Payload: CallID u64, ReportData [64].
type GetEvidence struct {
	CallID     uint64
	ReportData [64]byte
}

// Type implements Message.
func (*GetEvidence) Type() Type { return TypeGetEvidence }

func (m *GetEvidence) fields(c *codec) {
	c.id64("call_id", &m.CallID)
	c.fixed("report_data", m.ReportData[:])
}

// HealthStatus answers Health.
//
// Payload: ID u64, Healthy bool, Running u32, Queued u32, Workers u32,
// Detail string.
type HealthStatus struct {
	ID      uint64
	Healthy bool
	Running uint32 // handlers running now
	Queued  uint32 // deliveries waiting for a worker
	Workers uint32
	Detail  string
}

// Type implements Message.
func (*HealthStatus) Type() Type { return TypeHealthStatus }

func (m *HealthStatus) fields(c *codec) {
	c.id64("id", &m.ID)
	c.boolean("healthy", &m.Healthy)
	u32(c, "running", &m.Running)
	u32(c, "queued", &m.Queued)
	u32(c, "workers", &m.Workers)
	c.str("detail", &m.Detail, c.lim.MaxString, 0)
}

// Stopped answers Shutdown: the enclave has drained and exits.
//
// Payload: Abandoned u32 (deliveries still unanswered when the grace period
// ended), Message string.
type Stopped struct {
	Abandoned uint32
	Message   string
}

// Type implements Message.
func (*Stopped) Type() Type { return TypeStopped }

func (m *Stopped) fields(c *codec) {
	u32(c, "abandoned", &m.Abandoned)
	c.str("message", &m.Message, c.lim.MaxString, 0)
}

// Fatal reports an error the enclave cannot go on from (failed Init,
// protocol violation by the host); the enclave exits after sending it.
//
// Payload: Message string.
type Fatal struct{ Message string }

// Type implements Message.
func (*Fatal) Type() Type { return TypeFatal }

func (m *Fatal) fields(c *codec) { c.str("message", &m.Message, c.lim.MaxString, 0) }
