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

var typeNames = map[Type]string{
	TypeInit: "Init", TypeDeliver: "Deliver", TypeRequestResult: "RequestResult",
	TypeStoreResult: "StoreResult", TypeEvidenceResult: "EvidenceResult", TypeHealth: "Health",
	TypeShutdown: "Shutdown", TypeReady: "Ready", TypeReply: "Reply", TypeFail: "Fail",
	TypeSend: "Send", TypePublish: "Publish", TypeRequest: "Request", TypeLog: "Log",
	TypeStorePut: "StorePut", TypeStoreGet: "StoreGet", TypeGetEvidence: "GetEvidence",
	TypeHealthStatus: "HealthStatus", TypeStopped: "Stopped", TypeFatal: "Fatal",
	TypeDone: "Done",
}

// String returns the type's name, e.g. "Deliver".
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
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
	appendPayload(b []byte) []byte
	decodePayload(d *decoder)
}

// newMessage returns an empty message of type t (nil for an unknown type).
func newMessage(t Type) Message {
	if mk := messageMakers[t]; mk != nil {
		return mk()
	}
	return nil
}

func maker[T any, P interface {
	*T
	Message
}]() Message {
	return P(new(T))
}

// messageMakers make an empty message of each frame type.
var messageMakers = [256]func() Message{
	TypeInit: maker[Init], TypeDeliver: maker[Deliver], TypeRequestResult: maker[RequestResult],
	TypeStoreResult: maker[StoreResult], TypeEvidenceResult: maker[EvidenceResult], TypeHealth: maker[Health],
	TypeShutdown: maker[Shutdown], TypeReady: maker[Ready], TypeReply: maker[Reply], TypeDone: maker[Done],
	TypeFail: maker[Fail], TypeSend: maker[Send], TypePublish: maker[Publish], TypeRequest: maker[Request],
	TypeLog: maker[Log], TypeStorePut: maker[StorePut], TypeStoreGet: maker[StoreGet],
	TypeGetEvidence: maker[GetEvidence], TypeHealthStatus: maker[HealthStatus], TypeStopped: maker[Stopped],
	TypeFatal: maker[Fatal],
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

func (m *Init) appendPayload(b []byte) []byte {
	b = append(b, m.Identity.MREnclave[:]...)
	b = append(b, m.Identity.MRSigner[:]...)
	b = appendU16(b, m.Identity.ProductID)
	b = appendU16(b, m.Identity.SVN)
	b = appendStr(b, m.Name)
	b = appendU32(b, m.Instance)
	b = append(b, byte(m.SealMode), m.SealPolicy)
	b = appendBytes(b, m.SealSecret)
	b = appendBytes(b, m.Config)
	b = appendU32(b, m.Workers)
	return appendStr(b, m.Service)
}

func (m *Init) decodePayload(d *decoder) {
	copy(m.Identity.MREnclave[:], d.take("mrenclave", 32))
	copy(m.Identity.MRSigner[:], d.take("mrsigner", 32))
	m.Identity.ProductID = d.u16("product_id")
	m.Identity.SVN = d.u16("svn")
	m.Name = d.str("name", d.lim.MaxString, strUTF8)
	m.Instance = d.u32("instance")
	m.SealMode = SealMode(d.u8("seal_mode"))
	if m.SealMode > SealGramine {
		d.fail("seal_mode", fmt.Errorf("%w: %d", ErrInvalidValue, m.SealMode))
	}
	m.SealPolicy = d.u8("seal_policy")
	if m.SealPolicy > 2 {
		d.fail("seal_policy", fmt.Errorf("%w: %d", ErrInvalidValue, m.SealPolicy))
	}
	m.SealSecret = d.bytes("seal_secret")
	m.Config = d.bytes("config")
	m.Workers = d.u32("workers")
	if m.Workers > MaxWorkers {
		d.fail("workers", fmt.Errorf("%w: %d (at most %d)", ErrInvalidValue, m.Workers, MaxWorkers))
	}
	m.Service = d.str("service", d.lim.MaxString, strUTF8)
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

func (m *Deliver) appendPayload(b []byte) []byte {
	b = appendU64(b, m.Token)
	b = append(b, byte(m.Kind))
	b = appendDuration(b, m.Timeout)
	b = appendStr(b, m.Address)
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *Deliver) decodePayload(d *decoder) {
	m.Token = d.id64("token")
	m.Kind = wire.Kind(d.u8("kind"))
	switch {
	case d.err != nil:
	case m.Kind < wire.KindSend || m.Kind > wire.KindRequest:
		d.fail("kind", fmt.Errorf("%w: %d", ErrInvalidValue, m.Kind))
	case m.Kind == wire.KindRequest && m.Token == 0:
		d.fail("token", fmt.Errorf("%w: a request needs a non-zero token", ErrInvalidValue))
	}
	m.Timeout = d.duration("timeout")
	m.Address = d.address("address")
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
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

func (m *RequestResult) appendPayload(b []byte) []byte {
	b = appendU64(b, m.CallID)
	b = append(b, byte(m.Failure))
	b = appendU32(b, uint32(m.Code))
	b = appendStr(b, m.Message)
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *RequestResult) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.Failure = wire.Failure(d.u8("failure"))
	if m.Failure > wire.MaxFailure {
		d.fail("failure", fmt.Errorf("%w: %d", ErrInvalidValue, m.Failure))
	}
	m.Code = int32(d.u32("code"))
	m.Message = d.str("message", d.lim.MaxString, 0)
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
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

func (m *StoreResult) appendPayload(b []byte) []byte {
	b = appendU64(b, m.CallID)
	b = appendBool(b, m.Found)
	b = appendStr(b, m.Error)
	return appendBytes(b, m.Blob)
}

func (m *StoreResult) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.Found = d.boolean("found")
	m.Error = d.str("error", d.lim.MaxString, 0)
	m.Blob = d.bytes("blob")
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

func (m *EvidenceResult) appendPayload(b []byte) []byte {
	b = appendU64(b, m.CallID)
	b = appendStr(b, m.EvidenceType)
	b = appendStr(b, m.Error)
	return appendBytes(b, m.Quote)
}

func (m *EvidenceResult) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.EvidenceType = d.str("evidence_type", d.lim.MaxString, strUTF8)
	m.Error = d.str("error", d.lim.MaxString, 0)
	m.Quote = d.bytes("quote")
}

// Health asks for a HealthStatus with the same ID. Payload: ID u64.
type Health struct{ ID uint64 }

// Type implements Message.
func (*Health) Type() Type { return TypeHealth }

func (m *Health) appendPayload(b []byte) []byte { return appendU64(b, m.ID) }
func (m *Health) decodePayload(d *decoder)      { m.ID = d.id64("id") }

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

func (m *Shutdown) appendPayload(b []byte) []byte {
	return appendStr(appendDuration(b, m.Grace), m.Reason)
}

func (m *Shutdown) decodePayload(d *decoder) {
	m.Grace = d.duration("grace")
	m.Reason = d.str("reason", d.lim.MaxString, 0)
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

func (m *Ready) appendPayload(b []byte) []byte {
	return appendStrings(appendU32(b, m.Workers), m.Addresses)
}

func (m *Ready) decodePayload(d *decoder) {
	m.Workers = d.u32("workers")
	m.Addresses = d.strings("addresses", d.lim.MaxAddress)
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

func (m *Reply) appendPayload(b []byte) []byte {
	b = appendU64(b, m.Token)
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *Reply) decodePayload(d *decoder) {
	m.Token = d.token("token")
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
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

func (m *Done) appendPayload(b []byte) []byte { return appendU64(b, m.Token) }

func (m *Done) decodePayload(d *decoder) {
	m.Token = d.token("token")
}

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

func (m *Fail) appendPayload(b []byte) []byte {
	b = appendU64(b, m.Token)
	b = append(b, byte(m.Kind))
	b = appendU32(b, uint32(m.Code))
	return appendStr(b, m.Message)
}

func (m *Fail) decodePayload(d *decoder) {
	m.Token = d.token("token")
	m.Kind = FailKind(d.u8("kind"))
	if d.err == nil && (m.Kind < FailApplication || m.Kind > FailInternal) {
		d.fail("kind", fmt.Errorf("%w: %d", ErrInvalidValue, m.Kind))
	}
	m.Code = int32(d.u32("code"))
	m.Message = d.str("message", d.lim.MaxString, 0)
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

func (m *Send) appendPayload(b []byte) []byte {
	return appendBytes(appendHeaders(appendStr(b, m.Address), m.Headers), m.Body)
}

func (m *Send) decodePayload(d *decoder) {
	m.Address = d.address("address")
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
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

func (m *Publish) appendPayload(b []byte) []byte {
	return appendBytes(appendHeaders(appendStr(b, m.Address), m.Headers), m.Body)
}

func (m *Publish) decodePayload(d *decoder) {
	m.Address = d.address("address")
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
}

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

func (m *Request) appendPayload(b []byte) []byte {
	b = appendU64(b, m.CallID)
	b = appendDuration(b, m.Timeout)
	b = appendStr(b, m.Address)
	b = appendHeaders(b, m.Headers)
	return appendBytes(b, m.Body)
}

func (m *Request) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.Timeout = d.duration("timeout")
	m.Address = d.address("address")
	m.Headers = d.headers("headers")
	m.Body = d.bytes("body")
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

func (m *Log) appendPayload(b []byte) []byte {
	b = appendU32(b, uint32(int32(m.Level)))
	b = appendStr(b, m.Message)
	b = appendU32(b, uint32(len(m.Attrs)))
	for _, a := range m.Attrs {
		b = appendStr(appendStr(b, a.Key), a.Value)
	}
	return b
}

func (m *Log) decodePayload(d *decoder) {
	m.Level = slog.Level(int32(d.u32("level")))
	m.Message = d.str("message", d.lim.MaxString, 0)
	n := d.length("attrs", d.lim.MaxHeaders)
	if d.err != nil || n == 0 {
		return
	}
	if uint64(n)*8 > uint64(len(d.b)) {
		d.fail("attrs", fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrTruncated, n, len(d.b)))
		return
	}
	m.Attrs = make([]Attr, n)
	for i := range m.Attrs {
		m.Attrs[i].Key = d.strAt("attrs", i, ".key", d.lim.MaxString, strUTF8)
		m.Attrs[i].Value = d.strAt("attrs", i, ".value", d.lim.MaxString, 0)
		if d.err != nil {
			return
		}
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

func (m *StorePut) appendPayload(b []byte) []byte {
	return appendBytes(appendStr(appendU64(b, m.CallID), m.Key), m.Blob)
}

func (m *StorePut) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.Key = d.str("key", d.lim.MaxString, strUTF8|strNonEmpty)
	m.Blob = d.bytes("blob")
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

func (m *StoreGet) appendPayload(b []byte) []byte {
	return appendStr(appendU64(b, m.CallID), m.Key)
}

func (m *StoreGet) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	m.Key = d.str("key", d.lim.MaxString, strUTF8|strNonEmpty)
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

func (m *GetEvidence) appendPayload(b []byte) []byte {
	return append(appendU64(b, m.CallID), m.ReportData[:]...)
}

func (m *GetEvidence) decodePayload(d *decoder) {
	m.CallID = d.id64("call_id")
	copy(m.ReportData[:], d.take("report_data", 64))
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

func (m *HealthStatus) appendPayload(b []byte) []byte {
	b = appendU64(b, m.ID)
	b = appendBool(b, m.Healthy)
	b = appendU32(b, m.Running)
	b = appendU32(b, m.Queued)
	b = appendU32(b, m.Workers)
	return appendStr(b, m.Detail)
}

func (m *HealthStatus) decodePayload(d *decoder) {
	m.ID = d.id64("id")
	m.Healthy = d.boolean("healthy")
	m.Running = d.u32("running")
	m.Queued = d.u32("queued")
	m.Workers = d.u32("workers")
	m.Detail = d.str("detail", d.lim.MaxString, 0)
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

func (m *Stopped) appendPayload(b []byte) []byte {
	return appendStr(appendU32(b, m.Abandoned), m.Message)
}

func (m *Stopped) decodePayload(d *decoder) {
	m.Abandoned = d.u32("abandoned")
	m.Message = d.str("message", d.lim.MaxString, 0)
}

// Fatal reports an error the enclave cannot go on from (failed Init,
// protocol violation by the host); the enclave exits after sending it.
//
// Payload: Message string.
type Fatal struct{ Message string }

// Type implements Message.
func (*Fatal) Type() Type { return TypeFatal }

func (m *Fatal) appendPayload(b []byte) []byte { return appendStr(b, m.Message) }
func (m *Fatal) decodePayload(d *decoder)      { m.Message = d.str("message", d.lim.MaxString, 0) }
