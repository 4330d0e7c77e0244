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
// Through the embedded *Runtime a handler (or the Options.OnInit hook) can
// Send, Publish and Request on the bus, log (Logger, an slog.Logger), fetch
// attestation evidence, and use protected storage (Put, Get). Each of these
// is an OCALL; Request, Put, Get and Evidence wait for the host's answer (an
// ECALL) and are bounded by their context.
//
// # Workers
//
// At most Options.Workers handlers run at once (as the TCS count bounds the
// threads in an SGX enclave; default 8). Deliveries beyond that wait in a
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
// so the host does not learn the key names either. The host can still drop
// a value or roll it back to an older blob of the same key: storage has no
// freshness guarantee.
//
// Seal keys are chosen when Init arrives, in this order:
//
//  1. Options.KeySource, if set (tests, custom platforms).
//  2. Gramine: if <GramineRoot>/keys/_sgx_mrenclave exists (GramineRoot
//     defaults to /dev/attestation), or the host or the CLOISTER_SEAL=gramine
//     environment variable asks for it. Under Gramine a host's request for
//     simulated sealing is refused, so the host cannot downgrade the keys.
//  3. Simulated: seal.SimulatedKeySource over the MRENCLAVE and MRSIGNER the
//     host passed in Init and a platform secret (Init.SealSecret, or the
//     per-machine file of seal.LoadOrCreatePlatformSecret). SIMULATION
//     PROMISES NOTHING: the host knows or chooses every input of the key. The
//     enclave logs a warning saying so.
//
// The policy is Options.SealPolicy; if the image leaves it zero, the host's
// Init.SealPolicy; else MRENCLAVE. Images that must not let the host choose
// set it.
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
// Main sets Go's memory limit to Options.MemoryLimit (default 24 MiB) unless
// GOMEMLIMIT is set, cancels on SIGTERM/SIGINT, logs fatal errors to
// stderr, and exits 0 after a Shutdown, 1 otherwise.
//
// App.Serve runs the same runtime over any reader and writer (the host's
// inproc backend, tests). Several Serve calls of one App may run at once;
// each is an independent enclave instance.
//
// This package imports only the standard library and the boundary and seal
// packages — no bus, no networking — to keep the trusted computing base small.
package trusted
