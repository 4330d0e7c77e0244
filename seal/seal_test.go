package seal

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func testSource(t testing.TB) *SimulatedKeySource {
	t.Helper()
	s := &SimulatedKeySource{Secret: bytes.Repeat([]byte{7}, 32)}
	s.MREnclave = sha256.Sum256([]byte("image A"))
	s.MRSigner = sha256.Sum256([]byte("signer 1"))
	return s
}

func TestRoundTripBothPolicies(t *testing.T) {
	src := testSource(t)
	for _, p := range []Policy{PolicyMRENCLAVE, PolicyMRSIGNER} {
		for _, aad := range [][]byte{nil, []byte("counter/alice")} {
			blob, err := Seal(src, p, []byte("hello"), aad)
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) != len("hello")+Overhead {
				t.Fatalf("blob len %d", len(blob))
			}
			h, _, err := ParseBlob(blob)
			if err != nil || h.Policy != p || h.Version != Version {
				t.Fatalf("header %+v %v", h, err)
			}
			pt, err := Unseal(src, blob, aad)
			if err != nil || string(pt) != "hello" {
				t.Fatalf("unseal %q %v", pt, err)
			}
			if bytes.Contains(blob, []byte("hello")) {
				t.Fatal("plaintext visible in blob")
			}
		}
	}
}

func TestEmptyPlaintext(t *testing.T) {
	src := testSource(t)
	blob, err := Seal(src, PolicyMRENCLAVE, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := Unseal(src, blob, nil)
	if err != nil || len(pt) != 0 {
		t.Fatal(pt, err)
	}
}

func TestBlobsDiffer(t *testing.T) {
	s, err := NewSealer(testSource(t), PolicyMRENCLAVE)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Seal([]byte("x"), nil)
	b, _ := s.Seal([]byte("x"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal")
	}
}

func TestOtherIdentityFails(t *testing.T) {
	src := testSource(t)
	blobE, _ := Seal(src, PolicyMRENCLAVE, []byte("v"), nil)
	blobS, _ := Seal(src, PolicyMRSIGNER, []byte("v"), nil)

	otherImage := *src
	otherImage.MREnclave = sha256.Sum256([]byte("image B"))
	if _, err := Unseal(&otherImage, blobE, nil); !errors.Is(err, ErrKeyIDMismatch) {
		t.Fatalf("other MRENCLAVE: %v", err)
	}
	// Same signer, other image: MRSIGNER blob still opens.
	if pt, err := Unseal(&otherImage, blobS, nil); err != nil || string(pt) != "v" {
		t.Fatalf("same signer: %q %v", pt, err)
	}
	otherSigner := *src
	otherSigner.MRSigner = sha256.Sum256([]byte("signer 2"))
	if _, err := Unseal(&otherSigner, blobS, nil); !errors.Is(err, ErrKeyIDMismatch) {
		t.Fatalf("other MRSIGNER: %v", err)
	}
	otherMachine := *src
	otherMachine.Secret = bytes.Repeat([]byte{8}, 32)
	if _, err := Unseal(&otherMachine, blobE, nil); !errors.Is(err, ErrKeyIDMismatch) {
		t.Fatalf("other platform: %v", err)
	}
}

func TestEveryBitFlipFails(t *testing.T) {
	src := testSource(t)
	blob, _ := Seal(src, PolicyMRENCLAVE, []byte("some secret state"), []byte("ad"))
	for i := range len(blob) * 8 {
		b := bytes.Clone(blob)
		b[i/8] ^= 1 << (i % 8)
		if _, err := Unseal(src, b, []byte("ad")); err == nil {
			t.Fatalf("bit %d flipped: unsealed", i)
		}
	}
	if _, err := Unseal(src, blob, []byte("ae")); !errors.Is(err, ErrAuthenticationFailed) {
		t.Fatalf("wrong aad: %v", err)
	}
	b := bytes.Clone(blob)
	b[len(b)-1] ^= 1
	if _, err := Unseal(src, b, []byte("ad")); !errors.Is(err, ErrAuthenticationFailed) {
		t.Fatalf("tag flip: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	src := testSource(t)
	blob, _ := Seal(src, PolicyMRENCLAVE, []byte("abc"), nil)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(blob)) }
	cases := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic},
		{"version", mut(func(b []byte) []byte { b[4] = 3; return b }), ErrUnsupportedVersion},
		{"version 2 to 1", mut(func(b []byte) []byte { b[4] = Version1; return b }), ErrAuthenticationFailed},
		{"policy", mut(func(b []byte) []byte { b[5] = 9; return b }), ErrUnknownPolicy},
		{"flags", mut(func(b []byte) []byte { b[7] = 1; return b }), ErrBadFlags},
		{"keyid", mut(func(b []byte) []byte { b[8] ^= 1; return b }), ErrKeyIDMismatch},
		{"salt", mut(func(b []byte) []byte { b[20] ^= 1; return b }), ErrAuthenticationFailed},
		{"header only", blob[:HeaderSize], ErrTruncated},
		{"short header", blob[:20], ErrTruncated},
		{"no tag", blob[:HeaderSize+15], ErrTruncated},
	}
	for _, c := range cases {
		_, err := Unseal(src, c.blob, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestMissingIdentity(t *testing.T) {
	src := &SimulatedKeySource{Secret: make([]byte, 32), MREnclave: [32]byte{1}}
	if _, err := NewSealer(src, PolicyMRSIGNER); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("got %v", err)
	}
	s, err := NewSealer(src, PolicyMRENCLAVE)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
}

func TestGramineKeySource(t *testing.T) {
	dir := t.TempDir()
	if (GramineKeySource{Root: dir}).Available() {
		t.Fatal("available without keys")
	}
	os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrenclave"), bytes.Repeat([]byte{1}, 16), 0o600)
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrsigner"), bytes.Repeat([]byte{2}, 16), 0o600)
	g := GramineKeySource{Root: dir}
	if !g.Available() {
		t.Fatal("not available")
	}
	for _, p := range []Policy{PolicyMRENCLAVE, PolicyMRSIGNER} {
		blob, err := Seal(g, p, []byte("state"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := Unseal(g, blob, nil); err != nil || string(pt) != "state" {
			t.Fatal(pt, err)
		}
	}
	blob, _ := Seal(g, PolicyMRENCLAVE, []byte("state"), nil)
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrenclave"), bytes.Repeat([]byte{3}, 16), 0o600)
	if _, err := Unseal(g, blob, nil); !errors.Is(err, ErrKeyIDMismatch) {
		t.Fatalf("changed key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrenclave"), bytes.Repeat([]byte{3}, 15), 0o600)
	if _, err := Seal(g, PolicyMRENCLAVE, nil, nil); err == nil {
		t.Fatal("15-byte key accepted")
	}
	if _, err := Seal(GramineKeySource{Root: t.TempDir()}, PolicyMRENCLAVE, nil, nil); err == nil {
		t.Fatal("missing key accepted")
	}
}

func TestDerive(t *testing.T) {
	s, _ := NewSealer(testSource(t), PolicyMRENCLAVE)
	a, _ := s.Derive("a", 32)
	b, _ := s.Derive("b", 32)
	a2, _ := s.Derive("a", 32)
	if bytes.Equal(a, b) || !bytes.Equal(a, a2) {
		t.Fatal("derive")
	}
}

// TestVersion1BlobsOpen: blobs sealed by the version-1 format (files in
// testdata, made with testSource) still open, and tampering is detected.
func TestVersion1BlobsOpen(t *testing.T) {
	src := testSource(t)
	for name, aad := range map[string][]byte{"v1-mrenclave.blob": nil, "v1-mrsigner-aad.blob": []byte("aad")} {
		blob, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := ParseBlob(blob)
		if err != nil || h.Version != Version1 {
			t.Fatalf("%s: header %+v %v", name, h, err)
		}
		s, err := NewSealer(src, PolicyMRENCLAVE)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := s.Unseal(blob, aad)
		if err != nil || string(pt) != "state sealed by blob format version 1" {
			t.Fatalf("%s: %q %v", name, pt, err)
		}
		blob[len(blob)-1] ^= 1
		if _, err := s.Unseal(blob, aad); !errors.Is(err, ErrAuthenticationFailed) {
			t.Fatalf("%s tampered: %v", name, err)
		}
	}
}

// TestOneKeyPerLifetime: the blobs of one Sealer share its lifetime salt and
// count their nonces; another Sealer (a restart) has another salt; both
// open each other's blobs.
func TestOneKeyPerLifetime(t *testing.T) {
	src := testSource(t)
	a, _ := NewSealer(src, PolicyMRENCLAVE)
	b, _ := NewSealer(src, PolicyMRENCLAVE)
	var salt [saltSize]byte
	for i := range 5 {
		blob, err := a.Seal([]byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		h, _, _ := ParseBlob(blob)
		if h.Version != Version {
			t.Fatalf("version %d", h.Version)
		}
		if i == 0 {
			salt = h.Salt
		} else if h.Salt != salt {
			t.Fatal("salt changed within a lifetime")
		}
		var want [nonceSize]byte
		want[nonceSize-1] = byte(i)
		if h.Nonce != want {
			t.Fatalf("blob %d: nonce %x, want %x", i, h.Nonce, want)
		}
		if pt, err := b.Unseal(blob, nil); err != nil || string(pt) != "x" {
			t.Fatalf("other lifetime cannot open: %v", err)
		}
	}
	blob, _ := b.Seal([]byte("y"), nil)
	if h, _, _ := ParseBlob(blob); h.Salt == salt {
		t.Fatal("two lifetimes drew the same salt")
	}
	if _, err := a.Unseal(blob, nil); err != nil {
		t.Fatal(err)
	}
}

// TestLifetimeRotates: after maxBlob blobs a Sealer starts a new lifetime,
// and blobs of the old one still open.
func TestLifetimeRotates(t *testing.T) {
	s, _ := NewSealer(testSource(t), PolicyMRENCLAVE)
	s.maxBlob = 3
	var blobs [][]byte
	salts := map[[saltSize]byte]int{}
	for range 7 {
		b, err := s.Seal([]byte("z"), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		h, _, _ := ParseBlob(b)
		salts[h.Salt]++
		blobs = append(blobs, b)
	}
	if len(salts) != 3 {
		t.Fatalf("%d lifetimes for 7 blobs of at most 3, want 3", len(salts))
	}
	for _, b := range blobs {
		if _, err := s.Unseal(b, []byte("ad")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForgedLifetimesAreNotRemembered: blobs with made-up salts that fail
// to authenticate do not fill the table of remembered data keys.
func TestForgedLifetimesAreNotRemembered(t *testing.T) {
	s, _ := NewSealer(testSource(t), PolicyMRENCLAVE)
	blob, _ := s.Seal([]byte("v"), nil)
	for i := range 200 {
		f := bytes.Clone(blob)
		f[16], f[17] = byte(i), byte(i>>8)
		if _, err := s.Unseal(f, nil); !errors.Is(err, ErrAuthenticationFailed) {
			t.Fatal(err)
		}
	}
	s.openMu.Lock()
	n := len(s.opened)
	s.openMu.Unlock()
	if n != 1 {
		t.Fatalf("%d data keys remembered, want 1", n)
	}
}
