package secure

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/cloister-dev/cloister/wire"
)

// TestWireFormatGolden pins the version 1 envelope: the subkey derivation,
// the nonce, the associated data and the byte layout, independently of the
// implementation (the expected bytes are rebuilt here from the package
// documentation with the standard library alone). A change here is a
// protocol change and needs a new version.
func TestWireFormatGolden(t *testing.T) {
	key := AddressKey{Address: "water.stats", Epoch: 0x01020304}
	for i := range key.Key {
		key.Key[i] = byte(0xa0 + i)
	}
	var sender SenderID
	for i := range sender {
		sender[i] = byte(0x10 + i)
	}
	aead, err := deriveSubkey(&key, sender)
	if err != nil {
		t.Fatal(err)
	}
	s := &Sealer{address: key.Address, epoch: key.Epoch, sender: sender, aead: aead, ad: adPrefix(key.Address)}
	s.seq.Store(6)
	env, ref, err := s.Seal(wire.KindPublish, map[string]string{"z": "1", "a": "xy"}, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if ref.Seq != 7 {
		t.Fatalf("seq %d", ref.Seq)
	}

	// Rebuild from the documentation.
	info := []byte("cloister/secure/v1/sender")
	info = append(info, 0, 11)
	info = append(info, "water.stats"...)
	info = append(info, 1, 2, 3, 4)
	info = append(info, sender[:]...)
	sub, err := hkdf.Key(sha256.New, key.Key[:], nil, string(info), 32)
	if err != nil {
		t.Fatal(err)
	}
	header := []byte{'C', 'S', 'E', 1, 2, 1, 2, 3, 4}
	header = append(header, sender[:]...)
	header = append(header, 0, 0, 0, 0, 0, 0, 0, 7)
	block := []byte{0, 2, 0, 1, 'a', 0, 2, 'x', 'y', 0, 1, 'z', 0, 1, '1'}
	header = append(header, 0, 0, 0, byte(len(block)))
	header = append(header, block...)
	ad := []byte("cloister/secure/v1/envelope")
	ad = append(ad, 0, 11)
	ad = append(ad, "water.stats"...)
	ad = append(ad, header...)
	b, _ := aes.NewCipher(sub)
	g, _ := cipher.NewGCM(b)
	nonce := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7}
	want := g.Seal(bytes.Clone(header), nonce, []byte("hello"), ad)
	if !bytes.Equal(env, want) {
		t.Fatalf("envelope\n got %s\nwant %s", hex.EncodeToString(env), hex.EncodeToString(want))
	}
	// And fixed vectors, for other implementations and against drift.
	const golden = "435345010201020304101112131415161718191a1b1c1d1e1f0000000000000007" +
		"0000000f0002000161000278790001" + "7a000131"
	if got := hex.EncodeToString(env[:len(header)]); got != golden {
		t.Fatalf("header %s, want %s", got, golden)
	}
	const goldenEnvelope = golden + "9cc462069c62d7316cc91f66d9bbfdea831e5dbcf8"
	if got := hex.EncodeToString(env); got != goldenEnvelope {
		t.Fatalf("envelope %s, want %s", got, goldenEnvelope)
	}
	o := mustOpener(t, OpenerOptions{}, key)
	if got, err := o.Open(wire.KindPublish, env); err != nil || string(got.Plaintext) != "hello" {
		t.Fatalf("%v %v", got, err)
	}
}
