// Package trusted is the SDK an enclave image is built from: the code that
// runs inside the enclave, next to the handlers, and talks to the untrusted
// host only through the boundary protocol (package boundary).
//
// An image is a small Go program:
//
//	func main() {
//		app := trusted.New(trusted.Options{Workers: 8})
//		app.HandleFunc("counter.inc", func(ctx context.Context, c *trusted.Call) {
//			n, _, err := c.Get(ctx, c.Header("user"))
//			...
//			c.Put(ctx, c.Header("user"), next)
//			c.Reply(nil, next)
//		})
//		app.Main()
//	}
//
// # Handlers
//
// A Handler is registered per address. It receives the delivery as a *Call
// (address, headers, body, kind) and answers with Call.Reply or Call.Fail —
// exactly once, and only for requests (Call.ExpectsReply). It may answer
// later from another goroutine: a handler that returns without answering
// leaves the call open. A panic in a handler fails the call with
// boundary.FailPanic and a message naming the address and the panic value; the
// enclave keeps serving.
//
// A message sent to a durable address is acknowledged when its handler
// returns (the runtime answers the host's token with boundary.Done), and
// handed back for redelivery when the handler panics or the delivery is
// refused. So finish the work that must not be lost (a Put, a Send) before
// returning; a message a Layer refuses for good is acknowledged too, since
// delivering it again would not help.
//
// Through the embedded *Runtime a handler (or the Options.OnInit hook) can
// Send, Publish and Request on the bus, log (Logger, an slog.Logger), fetch
// attestation evidence, and use protected storage (Put, Get). Each of these
// is an OCALL, but for a Get served from the storage cache; Request,
// Evidence and a Get the cache cannot serve wait for the host's answer (an
// ECALL) and are bounded by their context. A Put does not wait (see
// Protected storage).
//
// # Workers
//
// At most Options.Workers handlers run at once (as the TCS count bounds the
// threads in an SGX enclave). An image that leaves it zero runs as many as
// the host asks for in Init (a node's enclave configuration sets it), or 8. Deliveries beyond that wait in a
// queue of at most Options.MaxQueue entries; beyond that they fail at once
// with boundary.FailOverloaded. Workers+1 goroutines share reading and
// running handlers (leader/followers): the one that reads a delivery runs
// its handler itself while another takes over reading, so a request crosses
// no goroutine inside the enclave, and since at most Workers of them run
// handlers, one is always free to read — results of OCALLs always reach the
// handlers waiting for them.
//
// # Protected storage
//
// Put seals the value with package seal inside the enclave and hands only
// the sealed blob to the host (StorePut OCALL); Get fetches the blob
// (StoreGet) and unseals it. The blob is bound to the storage key (as
// associated data), so the host cannot swap values between keys, and the
// key name the host sees is an HMAC of the key under a sealing-derived key,
// so the host does not learn the key names either. Inside the seal, every
// blob carries a Version (blob format 2; format 1 blobs still open, as
// Version zero). On its own, storage has no freshness guarantee: the host
// can drop a value or roll it back to an older blob of the same key. A
// Layer can install a StoreTracker (Runtime.TrackStore) that refuses such
// blobs (ErrRolledBack) and holds messages until the writes before them
// are registered: the secured-address layer does, with package
// trusted/fresh, when the manifest declares freshness.
//
// The runtime keeps the values it read or wrote (and the keys it found
// absent) in enclave memory, least recently used out first, bounded by
// Options.StoreCacheEntries and Options.StoreCacheBytes: a Get it can serve
// costs no OCALL. A Put seals the value and posts the blob (a StorePut with
// no answer) and returns; the host makes every write durable — in batches,
// one sync each — before it lets out anything the enclave sent after it: the
// reply, the Done of a durable message, a send, a publish, a request, and
// before it answers a later StoreGet. So a stateful request costs one
// boundary crossing, and a requester that saw the reply, or a durable
// message that was acknowledged, knows the state it led to is on disk. If
// the host cannot write, it fails what waited for the write as unavailable
// and restarts the enclave, so the cache never outlives a lost write.
// Options.SyncStore restores the older protocol (every Put and Get waits
// for the host, no cache).
//
// Errors of Put and Get cross the boundary (as Fail messages, in logs):
// they name a key by the storage name the host sees, never by the key.
//
// Seal keys are chosen when Init arrives, in this order:
//
//  1. Options.KeySource, if set (tests, custom platforms).
//  2. Gramine: if <GramineRoot>/keys/_sgx_mrenclave exists (GramineRoot
//     defaults to /dev/attestation), or the host (Init) or the Gramine
//     manifest (boundary.EnvGramineSeal, fixed and so measured) asks for it. Under Gramine a host's request for
//     simulated sealing is refused, so the host cannot downgrade the keys.
//  3. Simulated: seal.SimulatedKeySource over the MRENCLAVE and MRSIGNER the
//     host passed in Init and the platform secret Init.SealSecret (without
//     one, protected storage fails with ErrNoPlatformSecret). SIMULATION
//     PROMISES NOTHING: the host knows or chooses every input of the key. The
//     enclave logs a warning saying so.
//
// The policy is Options.SealPolicy; if the image leaves it zero, the host's
// Init.SealPolicy; else MRENCLAVE. Images that must not let the host choose
// set it.
//
// # Layers: the opt-in parts
//
// The core above is what every image links. What only some images need is
// an opt-in part the image names in its Options, so that images without it
// do not link it and its measurement vouches for less code:
//
//   - Options.Layer: a Layer between the boundary and the handlers. Package
//     trusted/secured is the secured-address layer: it joins the
//     coordinator at start-up (as the manifest service the host names in
//     Init, or the image fixes), opens and seals the messages of secured
//     and client-channel addresses, and enforces the grant's rights (see
//     its package doc). An image without a layer refuses an Init that asks
//     it to join a service, rather than run unprotected.
//   - Options.SharedMemory: the shared-memory boundary (shm.Adopt of
//     package boundary/shm). Without it the image stays on the
//     descriptors, and the host falls back to them.
//
// Handlers see the layer only through Call.Opened (the layer's own
// helpers, such as secured.Client, read it).
//
// # Running
//
// App.Main serves the protocol for a process image and exits: it reads
// ECALLs and writes OCALLs on
//
//   - the file descriptor(s) in CLOISTER_BOUNDARY_FD: "3" for one
//     bidirectional descriptor (a socket pair end), "3,4" for a read and a
//     write descriptor; or
//   - stdin and stdout when the variable is unset. os.Stdout is then pointed
//     at stderr, so that a stray fmt.Println cannot corrupt the stream.
//
// When the host offers a shared-memory region in CLOISTER_BOUNDARY_SHM (a
// descriptor number, or a path under Gramine's untrusted shared-memory
// mount) and the image opted in (Options.SharedMemory = shm.Adopt), Main
// maps it, checks its header and takes it: the handshake still
// crosses the descriptors above, then frames cross the region's rings and
// the descriptors only carry doorbells and end of stream (package
// boundary/shm). A region it cannot use is left alone, with a line on
// stderr, and the host stays on the descriptors.
//
// Main sets Go's memory limit to Options.MemoryLimit (default 24 MiB) unless
// GOMEMLIMIT is set, and GOMAXPROCS to Options.Procs (default 1) unless
// GOMAXPROCS is set, cancels on SIGTERM/SIGINT, logs fatal errors to
// stderr, and exits 0 after a Shutdown, 1 otherwise.
//
// App.Serve runs the same runtime over any reader and writer (the host's
// inproc backend, tests). Several Serve calls of one App may run at once;
// each is an independent enclave instance. Serve returns only once the
// goroutines it started — workers, and those a Layer started with
// Runtime.Go — have ended.
//
// This package imports only the standard library and the wire, boundary
// and seal packages — no bus, no networking, no envelopes, not even
// attest's X.509 parts — to keep the trusted computing base small; the
// budget test of internal/leancheck holds every image to its line budget.
package trusted
