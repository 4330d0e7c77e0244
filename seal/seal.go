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

// Format constants of blob version 1.
const (
	// Magic opens every sealed blob.
	Magic = "CLSL"
	// Version is the blob format version this package writes.
	Version = 1
	// HeaderSize is the size of the version-1 header in bytes.
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
	if h.Version != Version {
		return h, nil, fmt.Errorf("%w: version %d, this build reads version %d", ErrUnsupportedVersion, h.Version, Version)
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
// root keys it has read. A Sealer is safe for concurrent use.
type Sealer struct {
	policy Policy
	roots  [3]root // indexed by Policy
}

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
	s := &Sealer{policy: policy}
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

func blobAEAD(r *root, p Policy, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, r.key, salt, "cloister/seal/v1/aes-256-gcm"+string(rune(p)), keySize)
	if err != nil {
		return nil, fmt.Errorf("seal: derive blob key: %w", err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(b)
}

// Seal encrypts plaintext and binds it to aad (which is not stored in the
// blob: Unseal must be given the same aad). The result is a new slice.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	return s.AppendSeal(nil, plaintext, aad)
}

// AppendSeal is Seal that appends the blob to dst and returns the extended
// slice. dst must not overlap plaintext.
func (s *Sealer) AppendSeal(dst, plaintext, aad []byte) ([]byte, error) {
	r := &s.roots[s.policy]
	if r.err != nil {
		return nil, r.err
	}
	h := Header{Version: Version, Policy: s.policy, KeyID: r.keyID}
	if _, err := rand.Read(h.Salt[:]); err != nil {
		return nil, fmt.Errorf("seal: random salt: %w", err)
	}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return nil, fmt.Errorf("seal: random nonce: %w", err)
	}
	aead, err := blobAEAD(r, s.policy, h.Salt[:])
	if err != nil {
		return nil, err
	}
	start := len(dst)
	dst = appendHeader(dst, &h)
	var ad []byte
	if len(aad) == 0 {
		ad = dst[start:]
	} else {
		ad = make([]byte, 0, HeaderSize+len(aad))
		ad = append(append(ad, dst[start:]...), aad...)
	}
	return aead.Seal(dst, h.Nonce[:], plaintext, ad), nil
}

// Unseal authenticates and decrypts blob with associated data aad and returns
// the plaintext as a new slice. The blob may use either policy; the Sealer's
// source must provide that policy's key.
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
	aead, err := blobAEAD(r, h.Policy, h.Salt[:])
	if err != nil {
		return nil, err
	}
	ad := blob[:HeaderSize]
	if len(aad) > 0 {
		ad = make([]byte, 0, HeaderSize+len(aad))
		ad = append(append(ad, blob[:HeaderSize]...), aad...)
	}
	pt, err := aead.Open(make([]byte, 0, len(ct)-tagSize), h.Nonce[:], ct, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %d-byte %s blob", ErrAuthenticationFailed, len(blob), h.Policy)
	}
	return pt, nil
}

// Seal seals plaintext under policy with a key from src, binding aad. For
// many blobs, NewSealer once and reuse it.
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
