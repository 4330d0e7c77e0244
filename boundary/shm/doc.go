// Package shm carries the bytes of a boundary connection through memory
// shared by the host and an enclave image, instead of through pipes: one
// single-producer single-consumer ring of bytes each way, polled for a short
// while before sleeping, with a doorbell rung only when the peer sleeps.
//
// The ring is below the frames: a Stream is an io.Reader and io.Writer that
// boundary.NewConn uses like a pipe, so the frame codec, its limits and its
// strict decoding are the same on both transports. The package is standard
// library only, so the trusted side may import it.
//
// # Region layout
//
// The region is a file both sides map with MAP_SHARED: a memfd the host
// creates and hands to the child (process backend), or a file under an
// untrusted shared-memory mount (Gramine). Fields are in the byte order of
// the machine (both sides run on it); positions and flags are accessed
// atomically, at aligned offsets, each on its own 64-byte cache line.
//
//	offset        size  field
//	0             8     magic "CLSHMRG\n"
//	8             4     layout version (LayoutVersion)
//	12            4     ring size N: bytes of data per ring, a power of two
//	                    from MinRingSize to MaxRingSize
//	16            4     attach word: 0 while offered; AttachValue once the
//	                    enclave took the region (written by the enclave)
//	256 + 512·i   512   control block of ring i (0: host → enclave, the
//	                    ECALLs; 1: enclave → host, the OCALLs):
//	                    +0    u64 tail: bytes ever written (producer only)
//	                    +64   u64 head: bytes ever read (consumer only)
//	                    +128  u32 consumer asleep (set by the consumer,
//	                          cleared by the producer as it rings)
//	                    +192  u32 producer asleep (waiting for space; set by
//	                          the producer, cleared by the consumer as it rings)
//	4096 + N·i    N     data of ring i; byte at position p is at p mod N
//
// The region is 4096 + 2N bytes. The host creates it sealed against
// shrinking and growing (F_SEAL_SHRINK, F_SEAL_GROW), so that an image cannot
// truncate it under the host's mapping.
//
// # Protocol
//
// Positions run freely (u64, never wrapping in practice); the bytes in a
// ring are tail − head. Each side keeps its own positions in private memory
// and only ever stores them into the region; it never reads them back. The
// position it reads from the region is the peer's: it reads it once per
// step, checks that 0 ≤ tail − head ≤ N (unsigned arithmetic), and only
// then copies bytes between the ring and private memory. A check that fails
// is a *CorruptError and ends the stream, like garbage on a pipe; a copy
// never leaves the ring's N bytes whatever the peer wrote. Memory faults
// while touching the region (a region truncated under Gramine) are turned
// into errors too, never a crash.
//
// Handshake and fallback. The pipes stay: the boundary handshake (the
// first HandshakeBytes bytes each way) crosses them. The host offers a
// region by passing it to the child (EnvRegion names it); an image that
// accepts maps it, checks the header, stores AttachValue in the attach
// word, and only then writes its hello. The host, once it has read the
// image's hello, reads the attach word once: AttachValue means both sides
// use the rings from then on; anything else (an image that ignores the
// offer, an older image) means both stay on the pipes. Forcing the pipe is
// not offering a region.
//
// Wake-up. A consumer that finds its ring empty polls it for a while
// (runtime.Gosched between looks, sched_yield every 64 looks, so that the
// peer and the other goroutines get the core), then sets its asleep flag,
// looks once more, and blocks reading its incoming pipe. A producer, after
// publishing its tail, looks at the consumer's asleep flag; if set, it
// clears it (compare-and-swap) and writes one byte, the doorbell, to its
// outgoing pipe, without ever blocking on it. Flags and positions use
// sequentially consistent atomics, so either the producer sees the flag or
// the consumer sees the new tail: no wake-up is lost. The polling budget
// adapts: after a sleep that ended sooner than the longest budget it grows
// (polling would have caught that), after a longer sleep it halves, so an
// idle side sleeps at once and burns no CPU. (The longest budget must
// exceed the peer's wake-up latency, or the budget only ever halves; see
// DefaultPoll.) A producer that finds the ring
// full waits the same way for space (the consumer rings it after reading),
// with a short timer as a safety net.
//
// End of stream. The pipes also tell each side that the peer is gone: end
// of file on the incoming pipe (the peer exited or closed it) makes Read
// return what is left in the ring and then io.EOF, and makes a waiting
// Write fail. Closing a Stream closes its pipes and unmaps the region once
// no Read or Write is using it.
package shm
