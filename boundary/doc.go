// Package boundary is the enclave boundary protocol: the only way bytes cross
// between an untrusted host and the trusted runtime inside an enclave image.
//
// The host calls into the enclave with ECALL frames (Init, Deliver,
// RequestResult, StoreResult, EvidenceResult, Health, Shutdown); the enclave
// calls out with OCALL frames (Ready, Reply, Fail, Send, Publish, Request, Log,
// StorePut, StoreGet, GetEvidence, HealthStatus, Stopped, Fatal). Both sides
// see each other as untrusted input: every frame is length-limited and decoded
// strictly.
//
// The package is standard-library only and imports no networking; it runs
// over any byte stream: an os.Pipe pair, a socket pair passed to a child
// process, or an in-process io.Pipe.
//
// # Stream
//
// A connection starts with a handshake, then carries frames in both
// directions until one side closes it.
//
// Handshake. The host writes its 16-byte hello first; the enclave reads it,
// always answers with its own hello (so that the host, too, learns of a
// mismatch), then checks the host's. Hello layout (big-endian):
//
//	offset size field
//	0      8    magic "CLBNDRY\n"
//	8      2    protocol version (ProtocolVersion)
//	10     1    role: 1 = host, 2 = enclave
//	11     1    reserved, zero
//	12     4    largest frame this side accepts (bytes)
//
// A wrong magic, another protocol version, the same role on both sides or an
// absurd frame limit fail the handshake with a *HandshakeError that says
// which. Each side then never sends a frame larger than the limit the peer
// announced (Conn.Send returns ErrFrameTooLarge instead).
//
// Frame. Every frame is
//
//	u32 length   length of what follows (type byte + payload), 1..max frame
//	u8  type     a Type
//	... payload  the fields of that type, in the order documented on the type
//
// Field encodings: u8/u16/u32/u64 are fixed-width big-endian; i32/i64 are
// two's complement in u32/u64; a bool is one byte, 0 or 1; a string or
// bytes field is u32 length + bytes; string lists are u32 count + strings;
// headers are u32 count + (key string, value string) pairs, keys unique;
// durations are i64 nanoseconds, never negative. Addresses, header keys,
// store keys and log attribute keys must be valid UTF-8, non-empty where the
// type says so. A decoder rejects unknown types, frames of the wrong
// direction, lengths beyond the Limits, invalid enum values and trailing
// bytes; a *DecodeError names the frame type and the field.
//
// # Correlation
//
// Many calls are in flight at once in both directions. A Deliver that expects
// an answer (Kind Request) carries a non-zero Token chosen by the host; the
// enclave answers it with exactly one Reply or Fail carrying the same token,
// in any order relative to other deliveries. Send and Publish deliveries have
// Token 0 and get no answer. OCALLs that need an answer (Request, StorePut,
// StoreGet, GetEvidence) carry a CallID chosen by the enclave, unique among
// its outstanding calls; the host answers each with exactly one
// RequestResult, StoreResult or EvidenceResult of that CallID. Health carries
// an ID the host chose and is answered by HealthStatus.
//
// # Lifecycle
//
//	host                              enclave
//	hello  ─────────────────────────▶
//	       ◀───────────────────────── hello
//	Init   ─────────────────────────▶
//	       ◀───────────────────────── Ready (addresses) | Fatal
//	Deliver, results, Health ───────▶
//	       ◀───────────────────────── Reply, Fail, Send, …, Log
//	Shutdown ───────────────────────▶  (stop taking deliveries, drain)
//	       ◀───────────────────────── Stopped
//
// After Shutdown the enclave fails new deliveries with FailShuttingDown,
// keeps serving results for its draining handlers until the grace period
// ends, sends Stopped and exits. Fatal means the enclave cannot go on (init
// failed, protocol violation); it exits after sending it.
//
// # Batching
//
// Conn.Send is safe for concurrent use and batches: while one goroutine
// writes, frames sent by others collect in a buffer and go out in the next
// single write, so under load many frames cross per system call (and per
// enclave exit) while an idle connection sends each frame at once.
package boundary
