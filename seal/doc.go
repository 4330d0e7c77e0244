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
//     platform secret is handed in by the host (which keeps it in an
//     ordinary file, see attest.SimulationRoot), and the identity is
//     whatever the host claims. It exists so that the rest of
//     the system can be developed and tested on machines without SGX.
//
// From the root key R, a key ID and the data keys are derived with
// HKDF-SHA256 (crypto/hkdf):
//
//	keyID   = HKDF(secret=R, salt=nil,  info="cloister/seal/v1/key-id" ‖ policy)[0:8]
//	dataKey = HKDF(secret=R, salt=salt, info="cloister/seal/v2/data-key" ‖ policy)[0:32]   (version 2)
//	blobKey = HKDF(secret=R, salt=salt, info="cloister/seal/v1/aes-256-gcm" ‖ policy)[0:32] (version 1)
//
// The key ID lets Unseal tell "sealed under another identity" apart from
// "tampered with"; it reveals nothing about R beyond equality.
//
// # Lifetimes and nonces (version 2, written today)
//
// A Sealer's lifetime starts with its first Seal: it draws a random 128-bit
// lifetime salt, derives one data key from it (one HKDF and one AES key
// schedule per lifetime, not per blob) and seals every blob of the lifetime
// under that key with the GCM nonce
//
//	nonce = 0x00000000 ‖ counter (u64, big-endian; 0, 1, 2, … within the lifetime)
//
// and the lifetime salt in the header. A (key, nonce) pair never repeats:
// within a lifetime the counter never repeats, and a new lifetime (a new
// Sealer — every enclave start makes one — or the same Sealer after 2^32
// blobs) has a new random salt and so, but for a 2^-128 chance per pair of
// lifetimes, a different key. Several enclave instances sharing one
// identity at once each have their own lifetime. Unseal remembers the data
// keys of up to 64 lifetimes whose blobs authenticated, so that reading
// back the state of earlier lifetimes costs one HKDF per lifetime, not per
// blob.
//
// # Version 1 (still opened, never written)
//
// A version-1 blob has its own random salt, hence its own key, and a random
// nonce. Unseal derives that key for every version-1 blob it opens.
//
// # Blob format
//
// All integers are big-endian. Both versions have the same layout:
//
//	offset  size  field
//	0       4     magic "CLSL"
//	4       1     version (2; 1 for old blobs)
//	5       1     key policy: 1 = MRENCLAVE, 2 = MRSIGNER
//	6       2     flags, must be zero
//	8       8     key ID
//	16      16    salt (version 2: the lifetime salt; version 1: per blob)
//	32      12    nonce (AES-GCM nonce; version 2: zero ‖ counter)
//	44      n+16  AES-256-GCM ciphertext of the plaintext, with its 16-byte tag
//
// The GCM associated data is the 44-byte header followed by the caller's
// associated data, so any change to the header (version, policy, key ID,
// salt, nonce) or to the associated data makes Unseal fail. A blob is
// exactly Overhead (60) bytes longer than its plaintext. Other versions are
// refused with ErrUnsupportedVersion.
//
// # Cost
//
// Sealing or opening a blob of the current lifetime is AES-GCM alone; the
// key derivation is paid once per lifetime (and once per earlier lifetime
// read back). Sealing is meant for state at rest, not for per-message
// traffic (package secure does that).
//
// # Errors
//
// Unseal and ParseBlob return errors that wrap one of ErrBadMagic,
// ErrUnsupportedVersion, ErrUnknownPolicy, ErrTruncated, ErrKeyIDMismatch or
// ErrAuthenticationFailed, so callers can decide with errors.Is.
package seal
