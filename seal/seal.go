package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Policy selects which enclave identity a sealed blob is bound to.
type Policy uint8

const (
	// PolicyMRENCLAVE binds a blob to the exact measured enclave image: a
	// rebuilt or changed image cannot open it.
	PolicyMRENCLAVE Policy = 1
	// PolicyMRSIGNER binds a blob to the key that signed the enclave image: any
	// image from the same signer can open it (useful across upgrades).
	PolicyMRSIGNER Policy = 2
)

// String returns "MRENCLAVE", "MRSIGNER" or "Policy(n)".
func (p Policy) String() string {
	switch p {
	case PolicyMRENCLAVE:
		return "MRENCLAVE"
	case PolicyMRSIGNER:
		return "MRSIGNER"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// Valid reports whether p is a known policy.
func (p Policy) Valid() bool { return p == PolicyMRENCLAVE || p == PolicyMRSIGNER }

// Format constants. Versions 1 and 2 share one header layout (see the
// package doc); they differ in how the key and nonce are chosen.
const (
	// Magic opens every sealed blob.
	Magic = "CLSL"
	// Version is the blob format version this package writes: one data key
	// per Sealer lifetime and counter nonces.
	Version = 2
	// Version1 is the older format (a fresh key per blob), still opened.
	Version1 = 1
	// HeaderSize is the size of the header in bytes (both versions).
	HeaderSize = 44
	// Overhead is the number of bytes a sealed blob adds to its plaintext.
	Overhead = HeaderSize + tagSize

	keyIDSize = 8
	saltSize  = 16
	nonceSize = 12
	tagSize   = 16
	keySize   = 32
)

// Errors wrapped by Unseal and ParseBlob; test with errors.Is.
var (
	ErrBadMagic             = errors.New("seal: bad magic (not a sealed blob)")
	ErrUnsupportedVersion   = errors.New("seal: unsupported blob version")
	ErrUnknownPolicy        = errors.New("seal: unknown key policy")
	ErrTruncated            = errors.New("seal: blob truncated")
	ErrBadFlags             = errors.New("seal: reserved header flags set")
	ErrKeyIDMismatch        = errors.New("seal: key ID mismatch (sealed under another identity or platform)")
	ErrAuthenticationFailed = errors.New("seal: authentication failed (blob or associated data altered)")
)

// KeySource yields the root sealing key for a policy. Implementations must be
// safe for concurrent use.
type KeySource interface {
	// RootKey returns the secret root key bound to the enclave identity that
	// policy selects. It must be at least 16 bytes long.
	RootKey(policy Policy) ([]byte, error)
}

// Header is the parsed header of a sealed blob.
type Header struct {
	Version uint8
	Policy  Policy
	KeyID   [keyIDSize]byte
	Salt    [saltSize]byte
	Nonce   [nonceSize]byte
}

// ParseBlob checks the header of a sealed blob and returns it together with
// the ciphertext (which aliases blob). It does not authenticate anything.
func ParseBlob(blob []byte) (Header, []byte, error) {
	var h Header
	if len(blob) < len(Magic) {
		return h, nil, fmt.Errorf("%w: %d bytes, need at least %d for the magic", ErrTruncated, len(blob), len(Magic))
	}
	if string(blob[:4]) != Magic {
		return h, nil, fmt.Errorf("%w: got %q, want %q", ErrBadMagic, blob[:4], Magic)
	}
	if len(blob) < 5 {
		return h, nil, fmt.Errorf("%w: no version byte", ErrTruncated)
	}
	h.Version = blob[4]
	if h.Version != Version && h.Version != Version1 {
		return h, nil, fmt.Errorf("%w: version %d, this build reads versions %d and %d", ErrUnsupportedVersion, h.Version, Version1, Version)
	}
	if len(blob) < HeaderSize {
		return h, nil, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(blob), HeaderSize)
	}
	h.Policy = Policy(blob[5])
	if !h.Policy.Valid() {
		return h, nil, fmt.Errorf("%w: %d", ErrUnknownPolicy, blob[5])
	}
	if f := binary.BigEndian.Uint16(blob[6:8]); f != 0 {
		return h, nil, fmt.Errorf("%w: flags %#04x", ErrBadFlags, f)
	}
	copy(h.KeyID[:], blob[8:16])
	copy(h.Salt[:], blob[16:32])
	copy(h.Nonce[:], blob[32:44])
	ct := blob[HeaderSize:]
	if len(ct) < tagSize {
		return h, nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than the %d-byte tag", ErrTruncated, len(ct), tagSize)
	}
	return h, ct, nil
}

// appendHeader appends the encoded header h to dst.
func appendHeader(dst []byte, h *Header) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, h.Version, byte(h.Policy), 0, 0)
	dst = append(dst, h.KeyID[:]...)
	dst = append(dst, h.Salt[:]...)
	return append(dst, h.Nonce[:]...)
}

// Sealer seals and unseals blobs with keys from one KeySource. It caches the
// root keys it has read, derives one data key per lifetime (see the package
// doc) and remembers the data keys of the last few lifetimes whose blobs it
// opened. A Sealer is safe for concurrent use.
type Sealer struct {
	policy Policy
	roots  [3]root // indexed by Policy

	cur     atomic.Pointer[lifetime] // the data key Seal uses now
	rotate  sync.Mutex               // serialises replacing cur
	openMu  sync.Mutex
	opened  map[openKey]cipher.AEAD // data keys of other lifetimes, for Unseal
	maxBlob uint64                  // blobs per lifetime before a new one (tests lower it)
}

// lifetime is one data key: its HKDF salt (written into every blob it
// seals) and the counter that makes its nonces.
type lifetime struct {
	salt [saltSize]byte
	aead cipher.AEAD
	next atomic.Uint64 // the next nonce counter
}

// openKey names a lifetime's data key among those Unseal remembers.
type openKey struct {
	policy Policy
	salt   [saltSize]byte
}

// maxOpened bounds how many data keys of other lifetimes Unseal keeps.
const maxOpened = 64

// lifetimeBlobs is how many blobs one data key seals before the Sealer
// starts a new lifetime: far below the 2^64 counters a 96-bit nonce with a
// 32-bit zero prefix allows, and below AES-GCM's usage limits.
const lifetimeBlobs = 1 << 32

type root struct {
	key   []byte
	keyID [keyIDSize]byte
	err   error
}

// NewSealer returns a Sealer that seals under policy. It reads the root keys
// of both policies from src now; a policy whose key the source cannot provide
// fails only when used (so an MRENCLAVE-only source still works).
func NewSealer(src KeySource, policy Policy) (*Sealer, error) {
	if src == nil {
		return nil, errors.New("seal: nil KeySource")
	}
	if !policy.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPolicy, uint8(policy))
	}
	s := &Sealer{policy: policy, opened: make(map[openKey]cipher.AEAD), maxBlob: lifetimeBlobs}
	for _, p := range []Policy{PolicyMRENCLAVE, PolicyMRSIGNER} {
		s.roots[p] = loadRoot(src, p)
	}
	if err := s.roots[policy].err; err != nil {
		return nil, err
	}
	return s, nil
}

func loadRoot(src KeySource, p Policy) root {
	k, err := src.RootKey(p)
	if err != nil {
		return root{err: fmt.Errorf("seal: %s root key: %w", p, err)}
	}
	if len(k) < 16 {
		return root{err: fmt.Errorf("seal: %s root key is %d bytes, need at least 16", p, len(k))}
	}
	r := root{key: append([]byte(nil), k...)}
	id, err := hkdf.Key(sha256.New, r.key, nil, "cloister/seal/v1/key-id"+string(rune(p)), keyIDSize)
	if err != nil {
		return root{err: fmt.Errorf("seal: derive key ID: %w", err)}
	}
	copy(r.keyID[:], id)
	return r
}

// Policy returns the policy the Sealer seals under.
func (s *Sealer) Policy() Policy { return s.policy }

// KeyID returns the key ID written into blobs sealed under policy p.
func (s *Sealer) KeyID(p Policy) ([keyIDSize]byte, error) {
	if !p.Valid() {
		return [keyIDSize]byte{}, fmt.Errorf("%w: %d", ErrUnknownPolicy, uint8(p))
	}
	r := &s.roots[p]
	return r.keyID, r.err
}

// Derive returns n bytes of key material for a purpose named by label,
// derived from the root key of the Sealer's policy with HKDF-SHA256 under the
// info "cloister/seal/v1/derive/" ‖ label. Distinct labels give independent
// keys; the material never equals a blob key.
func (s *Sealer) Derive(label string, n int) ([]byte, error) {
	r := &s.roots[s.policy]
	if r.err != nil {
		return nil, r.err
	}
	return hkdf.Key(sha256.New, r.key, nil, "cloister/seal/v1/derive/"+label, n)
}

// dataAEAD derives the AES-256-GCM key of a blob: for version 1 from the
// blob's own salt, for version 2 from its lifetime's salt.
func dataAEAD(r *root, version uint8, p Policy, salt []byte) (cipher.AEAD, error) {
	info := "cloister/seal/v2/data-key" + string(rune(p))
	if version == Version1 {
		info = "cloister/seal/v1/aes-256-gcm" + string(rune(p))
	}
	k, err := hkdf.Key(sha256.New, r.key, salt, info, keySize)
	if err != nil {
		return nil, fmt.Errorf("seal: derive data key: %w", err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(b)
}

// lifetime returns the data key to seal with and the nonce counter to use,
// starting a new lifetime (fresh random salt, one HKDF) on first use and
// when the current one has sealed maxBlob blobs.
func (s *Sealer) lifetime(r *root) (*lifetime, uint64, error) {
	for {
		if l := s.cur.Load(); l != nil {
			if n := l.next.Add(1) - 1; n < s.maxBlob {
				return l, n, nil
			}
		}
		s.rotate.Lock()
		l := s.cur.Load()
		if l == nil || l.next.Load() >= s.maxBlob {
			nl := &lifetime{}
			if _, err := rand.Read(nl.salt[:]); err != nil {
				s.rotate.Unlock()
				return nil, 0, fmt.Errorf("seal: random lifetime salt: %w", err)
			}
			aead, err := dataAEAD(r, Version, s.policy, nl.salt[:])
			if err != nil {
				s.rotate.Unlock()
				return nil, 0, err
			}
			nl.aead = aead
			s.remember(openKey{s.policy, nl.salt}, aead)
			s.cur.Store(nl)
		}
		s.rotate.Unlock()
	}
}

// remember keeps a lifetime's data key for Unseal, forgetting an arbitrary
// other one when maxOpened are kept.
func (s *Sealer) remember(k openKey, aead cipher.AEAD) {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if len(s.opened) >= maxOpened {
		for old := range s.opened {
			delete(s.opened, old)
			break
		}
	}
	s.opened[k] = aead
}

// Seal encrypts plaintext and binds it to aad (which is not stored in the
// blob: Unseal must be given the same aad). The result is a new slice.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	return s.AppendSeal(make([]byte, 0, Overhead+len(plaintext)), plaintext, aad)
}

// AppendSeal is Seal that appends the blob to dst and returns the extended
// slice. dst must not overlap plaintext.
func (s *Sealer) AppendSeal(dst, plaintext, aad []byte) ([]byte, error) {
	r := &s.roots[s.policy]
	if r.err != nil {
		return nil, r.err
	}
	l, n, err := s.lifetime(r)
	if err != nil {
		return nil, err
	}
	h := Header{Version: Version, Policy: s.policy, KeyID: r.keyID, Salt: l.salt}
	binary.BigEndian.PutUint64(h.Nonce[4:], n)
	start := len(dst)
	dst = appendHeader(dst, &h)
	var ad []byte
	if len(aad) == 0 {
		ad = dst[start:]
	} else {
		ad = make([]byte, 0, HeaderSize+len(aad))
		ad = append(append(ad, dst[start:]...), aad...)
	}
	return l.aead.Seal(dst, h.Nonce[:], plaintext, ad), nil
}

// openAEAD returns the data key of a parsed blob: derived anew for
// version 1; for version 2 the remembered key of its lifetime, or derived
// anew with fresh set (the caller remembers it only once the blob
// authenticated, so that forged salts cannot flush the remembered keys).
func (s *Sealer) openAEAD(r *root, h *Header) (aead cipher.AEAD, fresh bool, err error) {
	if h.Version == Version {
		s.openMu.Lock()
		aead = s.opened[openKey{h.Policy, h.Salt}]
		s.openMu.Unlock()
		if aead != nil {
			return aead, false, nil
		}
	}
	aead, err = dataAEAD(r, h.Version, h.Policy, h.Salt[:])
	return aead, h.Version == Version, err
}

// Unseal authenticates and decrypts blob with associated data aad and returns
// the plaintext as a new slice. The blob may use either policy and either
// format version; the Sealer's source must provide that policy's key.
func (s *Sealer) Unseal(blob, aad []byte) ([]byte, error) {
	h, ct, err := ParseBlob(blob)
	if err != nil {
		return nil, err
	}
	r := &s.roots[h.Policy]
	if r.err != nil {
		return nil, r.err
	}
	if subtle.ConstantTimeCompare(h.KeyID[:], r.keyID[:]) != 1 {
		return nil, fmt.Errorf("%w: blob key ID %x, this enclave's %s key ID %x", ErrKeyIDMismatch, h.KeyID, h.Policy, r.keyID)
	}
	ad := blob[:HeaderSize]
	if len(aad) > 0 {
		ad = make([]byte, 0, HeaderSize+len(aad))
		ad = append(append(ad, blob[:HeaderSize]...), aad...)
	}
	aead, fresh, err := s.openAEAD(r, &h)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(make([]byte, 0, len(ct)-tagSize), h.Nonce[:], ct, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %d-byte version-%d %s blob", ErrAuthenticationFailed, len(blob), h.Version, h.Policy)
	}
	if fresh {
		s.remember(openKey{h.Policy, h.Salt}, aead)
	}
	return pt, nil
}

// Seal seals plaintext under policy with a key from src, binding aad. For
// many blobs, NewSealer once and reuse it: every Sealer derives its own
// data key once.
func Seal(src KeySource, policy Policy, plaintext, aad []byte) ([]byte, error) {
	s, err := NewSealer(src, policy)
	if err != nil {
		return nil, err
	}
	return s.Seal(plaintext, aad)
}

// Unseal opens a blob made by Seal with a key from src; the policy is read
// from the blob's header.
func Unseal(src KeySource, blob, aad []byte) ([]byte, error) {
	h, _, err := ParseBlob(blob)
	if err != nil {
		return nil, err
	}
	s, err := NewSealer(src, h.Policy)
	if err != nil {
		return nil, err
	}
	return s.Unseal(blob, aad)
}
