// Package manifest reads and checks a Cloister application manifest: which
// services exist, which measured enclave images may run the trusted ones,
// which secured and plain addresses each service may consume, send to and
// publish on, the secrets trusted services receive, the attestation policy,
// and the owner key that signs updates. The coordinator (itself a trusted
// service) enforces it; clients pin its canonical hash.
//
// # File format
//
// A manifest is YAML (JSON is accepted, being YAML):
//
//	version: 3                       # ≥ 1; every update must increase it
//	owner:                           # optional; without it no update is accepted
//	  public_key: |                  # ECDSA P-256 or Ed25519: PEM, or base64 of
//	    -----BEGIN PUBLIC KEY-----   # the PKIX DER (or of a raw 32-byte Ed25519 key)
//	    ...
//	    -----END PUBLIC KEY-----
//	policy:                          # optional
//	  accepted_tcb: [UpToDate, SWHardeningNeeded]   # default [UpToDate]
//	  allow_simulation: false        # simulated evidence promises nothing
//	freshness:                       # optional: the coordinator's quorum memory
//	  replicas: 3                    # coordinator replicas (1..7); a quorum is a majority
//	  checkpoint: 1s                 # services register their state at least this often;
//	                                 # 0s: every write, before its reply leaves the enclave
//	services:
//	  analytics:                     # trusted: it has identities
//	    identities:                  # any one of them is enough
//	      - mrenclave: 64 hex digits
//	        min_svn: 0               # optional
//	      - mrsigner: 64 hex digits
//	        product_id: 1
//	        min_svn: 2
//	    debug: false                 # allow debug enclaves (the host reads their memory)
//	    secrets:
//	      stats-key: {generate: 32}  # a random key of 16..1024 bytes, made by the coordinator
//	      api-token: {value: "hex:00ff..."}   # or "base64:...", supplied by the owner (1..4096 bytes;
//	                                          # the prefix says how to decode, since "deadbeef" is both)
//	  ingest: {}                     # regular: no identities, no secrets, plain addresses only
//	clients:                         # optional: outside clients that may open sessions
//	  s-001:                         # to the addresses open to clients; the trusted
//	    public_key: base64           # service learns which client sent each message
//	                                 # (Ed25519: base64 of the raw 32 bytes, or PEM / PKIX)
//	addresses:
//	  water.readings:                # a bus address: exact, no wildcards
//	    secured: false               # secured: payloads are envelopes under address keys
//	    durable: true                # kept by the broker until consumed
//	    clients: false               # the clients above may send it client-session
//	                                 # messages sealed to its (trusted) consumer's key
//	    consume: [analytics]
//	    send: [ingest]               # send covers request
//	    publish: []
//
// An address needs at least one of consume, send or publish (possibly an
// empty list). A regular service is written "ingest: {}" or "ingest:".
//
// Names of services and secrets are 1 to 64 characters of A–Z a–z 0–9 '-' '_'
// (and '.' for secrets). Addresses follow the bus rules: 1 to 255 bytes of
// dot-separated, non-empty segments of A–Z a–z 0–9 '-' '_' ':' '/'. There
// are no wildcard patterns: a right is on one exact address, as the bus
// itself has no wildcard addresses.
//
// # Strictness
//
// Unknown fields, duplicate keys, aliases, values of the wrong type, and
// more than one YAML document are errors. Every error names the field path
// and line, e.g.
//
//	services.analytics.identities[0].mrenclave (line 12): want 64 hex digits, got 62 characters
//	addresses."water.stats".consume[1] (line 40): service "ingest" has no identities (it is regular), so it cannot consume on a secured address
//
// (addresses are quoted in paths, since they contain dots)
// and all of them are reported at once (an errors.Join of [*FieldError]s; see
// [FieldErrors]). Cross-checks: addresses name existing services; only
// trusted services (with identities) may hold a right on a secured address
// or have secrets or debug set.
//
// # Canonical hash
//
// [Manifest.Canonical] encodes the parsed model as JSON with sorted keys,
// every field present (except an address's clients flag, present only when
// true, and the clients section, present only when not empty, so that
// hashes pinned before they existed stay valid), lists of
// names and statuses sorted, identities
// sorted, byte strings in lowercase hex (secrets as "hex:…") and the owner
// key as base64 PKIX DER. It does not depend on YAML formatting, key order,
// comments or equivalent spellings, and is itself a valid manifest that
// parses to the same hash. [Manifest.Hash] is SHA-256 over
// "cloister manifest v1\n" ‖ canonical JSON: what clients pin.
//
// Secret values are part of the hash, so a low-entropy value could be
// guessed from it: supply only random values, or use generate.
//
// # Updates
//
// An update is the next manifest and the owner's signature over
//
//	"cloister manifest update v1\n" ‖ hash of the current manifest ‖ hash of the next
//
// (Ed25519 over the message; ECDSA P-256 over its SHA-256, ASN.1). The
// current manifest's owner key must have signed it and the version must
// grow ([Manifest.VerifyUpdate], [SignUpdate]). The next manifest may name a
// new owner key: that is how the key is rotated.
//
// # Attestation policies
//
// attest.Policy requires every identity rule it holds, so "this MRENCLAVE
// or that MRSIGNER" cannot be one Policy. [Manifest.Policies] returns one
// policy per identity, and [Manifest.Check] accepts claims that satisfy any
// of them.
package manifest
