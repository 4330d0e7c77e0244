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
// Token 0 and get no answer, unless the host must know when one was handled
// (to acknowledge a durable message): then it carries a non-zero Token and
// the enclave answers exactly one Done when the handler returned, or one
// Fail when the delivery was refused (no handler, overloaded, shutting
// down) or the handler panicked. OCALLs that need an answer (Request, StorePut,
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
// # What the host must do
//
// The host side (package enclave) drives a connection like this:
//
//	conn, err := boundary.NewConn(ctx, r, w, boundary.RoleHost, boundary.Options{})
//	conn.Send(&boundary.Init{Identity: id, Name: name, Config: cfg})
//	// first OCALL: *boundary.Ready (addresses to consume) or *boundary.Fatal
//
// and then, in one goroutine that does nothing but read, dispatches every
// OCALL without waiting on the enclave (use Conn.Post, or hand the work to
// another goroutine, for answers sent from the reading goroutine):
//
//   - Reply / Fail: complete the bus request with that Token (Fail.Kind
//     FailApplication is a recipient failure with Fail.Code; the other kinds
//     are runtime failures, Code 0); for an acknowledged send or publish,
//     Fail means it was not handled. Done: the acknowledged send or publish
//     of that Token was handled.
//   - Send / Publish / Request: perform the bus operation; answer each
//     Request with exactly one RequestResult of its CallID, also on timeout
//     (FailureTimeout) — the enclave's handler waits for it or for its own
//     context.
//   - StorePut: store Blob under Key, replacing any earlier blob, durably
//     enough to survive an enclave restart; StoreGet: Found=false when
//     absent. Keys are opaque ASCII names, blobs are sealed. A StoreGet and
//     a StorePut with a non-zero CallID are answered with StoreResult
//     (Error set when storage failed); a StorePut with CallID 0 (posted) is
//     never answered and follows the ordering rule below.
//   - GetEvidence: answer EvidenceResult (simulated evidence binding
//     ReportData in the process backend; Error when none is available).
//   - Log: re-log with the enclave's name; HealthStatus: answer of Health.
//   - Stopped: the enclave drained after Shutdown and exits; Fatal: it could
//     not go on and exits.
//
// Tokens of outstanding Deliver frames must be unique and non-zero. When
// the enclave dies (Recv fails), every outstanding token fails at once. A
// *DecodeError from Recv leaves the stream in sync; its ID, when non-zero,
// is the token of the Reply or Fail that could not be decoded. For file
// descriptors, put the host's end in non-blocking mode before os.NewFile so
// that Close interrupts a blocked Recv.
//
// # Ordered store writes
//
// The OCALL stream is ordered, and the host keeps that order for store
// writes: every StorePut the enclave wrote before a Reply, Fail, Done, Send,
// Publish, Request or StoreGet is durable before the host acts on that
// frame (releases the reply, acknowledges the durable message, puts the
// message on the bus, makes the request, reads the store). So an enclave
// posts its writes (CallID 0) without waiting, and a requester that saw its
// reply — or a durable message that was acknowledged — implies that every
// write made before it is on disk. A host that cannot make a posted write
// durable must not release what follows it: it fails those replies and
// acknowledgements as unavailable and ends the enclave instance (whose
// in-memory view of its storage may hold the lost write), which then
// starts afresh from what is durable.
//
// # Batching
//
// Conn.Send is safe for concurrent use and batches: while one goroutine
// writes, frames sent by others collect in a buffer and go out in the next
// single write, so under load many frames cross per system call (and per
// enclave exit) while an idle connection sends each frame at once. The
// batching is a Sender, which a side that reads its stream with a Reader
// (or a Conn) may also use alone to send; with SenderOptions.Gather, frames
// that need not leave at once wait for the other runnable goroutines to add
// theirs (the host's writer does this).
//
// # Transports
//
// A Conn runs over any byte stream. Package boundary/shm provides one over
// shared memory (a ring of bytes each way, below the frames), which the
// process backend uses after a handshake on pipes.
package boundary
