// Package seal protects state that an enclave keeps outside itself: a blob
// sealed by this package can be opened only by an enclave with the same
// identity (the same MRENCLAVE, or the same MRSIGNER, depending on the key
// policy chosen when sealing). The host stores sealed blobs and can read,
// drop, reorder or roll them back, but it cannot read or alter their
// contents without detection.
//
// # Keys
//
// Every KeySource yields a root key for a Policy:
//
//   - GramineKeySource reads the 16-byte SGX seal keys that Gramine exposes
//     at <root>/keys/_sgx_mrenclave and <root>/keys/_sgx_mrsigner (root
//     defaults to /dev/attestation). Those keys come from the CPU (EGETKEY)
//     and are bound to the enclave identity by the hardware.
//   - SimulatedKeySource derives the root key with HKDF-SHA256 from a
//     per-machine platform secret and the MRENCLAVE or MRSIGNER value it is
//     given. SIMULATION PROMISES NOTHING against a malicious host: the
//     platform secret is an ordinary file readable by the machine's owner, and
//     the identity is whatever the host claims. It exists so that the rest of
//     the system can be developed and tested on machines without SGX.
//
// From the root key R, a key ID and per-blob keys are derived with HKDF-SHA256
// (crypto/hkdf):
//
//	keyID   = HKDF(secret=R, salt=nil,  info="cloister/seal/v1/key-id" ‖ policy)[0:8]
//	blobKey = HKDF(secret=R, salt=salt, info="cloister/seal/v1/aes-256-gcm" ‖ policy)[0:32]
//
// where salt is 16 random bytes chosen for every blob. The key ID lets Unseal
// tell "sealed under another identity" apart from "tampered with"; it reveals
// nothing about R beyond equality.
//
// # Nonces
//
// Every blob uses a fresh random 128-bit salt, hence a fresh AES-256 key, and
// a random 96-bit GCM nonce under that key. A (key, nonce) pair repeats only if
// both the 128-bit salt and the 96-bit nonce collide, so the usual GCM limit
// of about 2^32 random nonces per key does not apply: each key encrypts
// exactly one message. Nonce reuse is impossible in practice, also across
// restarts and across several enclave instances sharing one identity.
//
// # Blob format (version 1)
//
// All integers are big-endian.
//
//	offset  size  field
//	0       4     magic "CLSL"
//	4       1     version (1)
//	5       1     key policy: 1 = MRENCLAVE, 2 = MRSIGNER
//	6       2     flags, must be zero
//	8       8     key ID
//	16      16    salt (per-blob HKDF salt)
//	32      12    nonce (AES-GCM nonce)
//	44      n+16  AES-256-GCM ciphertext of the plaintext, with its 16-byte tag
//
// The GCM associated data is the 44-byte header followed by the caller's
// associated data, so any change to the header (policy, key ID, salt, nonce)
// or to the associated data makes Unseal fail. A version-1 blob is exactly
// Overhead (60) bytes longer than its plaintext.
//
// # Cost
//
// The per-blob key derivation (one HKDF-SHA256 and an AES key schedule)
// costs a few microseconds per Seal or Unseal on top of AES-GCM itself; it
// buys freedom from nonce bookkeeping. Sealing is meant for state at rest,
// not for per-message traffic (package secure does that).
//
// # Errors
//
// Unseal and ParseBlob return errors that wrap one of ErrBadMagic,
// ErrUnsupportedVersion, ErrUnknownPolicy, ErrTruncated, ErrKeyIDMismatch or
// ErrAuthenticationFailed, so callers can decide with errors.Is.
package seal
