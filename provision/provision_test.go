package provision

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloister-dev/cloister/attest"
)

func TestBindingsAreDistinct(t *testing.T) {
	a := JoinReportData([]byte("ab"), []byte("c"))
	b := JoinReportData([]byte("a"), []byte("bc"))
	if a == b {
		t.Fatal("field boundaries are not bound")
	}
	if AttestReportData([]byte("k"), []byte("h"), []byte("n")) == digest(labelJoin, []byte("k"), []byte("h"), []byte("n")) {
		t.Fatal("labels do not separate domains")
	}
	if bytes.Equal(ServiceKeyMessage([]byte("h"), "svc", []byte("k")), RotateMessage([]byte("h"), 1, "1h")) {
		t.Fatal("messages collide")
	}
}

func TestDecodeIsStrict(t *testing.T) {
	var r JoinRequest
	for _, bad := range []string{
		`{"service":"a","extra":1}`,
		`{"service":"a"} {"service":"b"}`,
		`{"service":`,
		`[]`,
	} {
		if err := Decode([]byte(bad), &r); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%s) = %v, want ErrMalformed", bad, err)
		}
	}
	big := make([]byte, MaxMessageSize+1)
	if err := Decode(big, &r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized message: %v", err)
	}
	in := JoinRequest{Service: "analytics", PublicKey: []byte{1, 2}, Nonce: make([]byte, NonceSize), Evidence: []byte("e")}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out JoinRequest
	if err := Decode(b, &out); err != nil || out.Service != in.Service || !bytes.Equal(out.PublicKey, in.PublicKey) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	if err := CheckNonce(out.Nonce); err != nil {
		t.Fatal(err)
	}
	if err := CheckNonce([]byte{1}); !errors.Is(err, ErrMalformed) {
		t.Fatal("short nonce accepted")
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range []any{
		JoinRequest{Service: "s", PublicKey: []byte{1}, Nonce: make([]byte, 32), Evidence: []byte{2}},
		Grant{Service: "s", Epoch: 3, Addresses: []AddressGrant{{Address: "a.b", Secured: true, Keys: []EpochKey{{Epoch: 3, Key: make([]byte, 32)}}}}},
		AttestResponse{Evidence: []byte{1}, SigningKey: []byte{2}, ManifestHash: make([]byte, 32)},
		ManifestHistoryRequest{Pinned: make([]byte, HashSize)},
		ManifestHistory{Entries: []ManifestUpdate{{Manifest: []byte(`{"version":1}`)}, {Manifest: []byte(`{"version":2}`), Signature: make([]byte, 64)}}},
	} {
		b, _ := Encode(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var g Grant
		if Decode(data, &g) == nil {
			b, err := Encode(g)
			if err != nil {
				t.Fatal(err)
			}
			var again Grant
			if err := Decode(b, &again); err != nil {
				t.Fatalf("re-decoding an encoded grant: %v", err)
			}
		}
		var j JoinRequest
		_ = Decode(data, &j)
		var hr ManifestHistoryRequest
		if Decode(data, &hr) == nil && CheckHash(hr.Pinned) == nil && len(hr.Pinned) != HashSize {
			t.Fatal("CheckHash accepted a hash of the wrong size")
		}
		var h ManifestHistory
		if Decode(data, &h) == nil && h.Check() == nil {
			if len(h.Entries) == 0 || len(h.Entries) > MaxHistoryEntries {
				t.Fatalf("Check accepted %d entries", len(h.Entries))
			}
			for i, e := range h.Entries[1:] {
				if len(e.Signature) == 0 {
					t.Fatalf("Check accepted entry %d without a signature", i+1)
				}
			}
		}
	})
}

func TestManifestHistoryCheck(t *testing.T) {
	m := []byte(`{"version":1}`)
	sig := make([]byte, 64)
	good := ManifestHistory{Entries: []ManifestUpdate{{Manifest: m}, {Manifest: m, Signature: sig}}}
	b, err := Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	var h ManifestHistory
	if err := Decode(b, &h); err != nil || h.Check() != nil || len(h.Entries) != 2 {
		t.Fatalf("round trip: %+v, %v", h, err)
	}
	for name, bad := range map[string]ManifestHistory{
		"no entries":                     {},
		"too many entries":               {Entries: make([]ManifestUpdate, MaxHistoryEntries+1)},
		"entry 1 has no owner signature": {Entries: []ManifestUpdate{{Manifest: m}, {Manifest: m}}},
		"entry 0 has no manifest":        {Entries: []ManifestUpdate{{}}},
	} {
		if err := bad.Check(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if CheckHash(make([]byte, HashSize-1)) == nil || CheckHash(make([]byte, HashSize)) != nil {
		t.Fatal("CheckHash")
	}
	if err := Decode([]byte(`{"entries":[],"current":1}`), &h); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown field accepted: %v", err)
	}
}

func TestRotateMessageBindsGrace(t *testing.T) {
	if bytes.Equal(RotateMessage([]byte("h"), 2, "1h"), RotateMessage([]byte("h"), 2, "1000h")) {
		t.Fatal("the grace period is not signed")
	}
}

func TestEncodeEvidenceMatchesAttest(t *testing.T) {
	for _, typ := range []attest.EvidenceType{attest.EvidenceSimulated, attest.EvidenceSGXDCAP} {
		ev := attest.Evidence{Type: typ, Quote: []byte("quote bytes")}
		want, err := ev.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeEvidence(string(typ), ev.Quote)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("EncodeEvidence(%s) = %x, %v; attest writes %x", typ, got, err, want)
		}
	}
	if _, err := EncodeEvidence("tpm", nil); err == nil {
		t.Fatal("unknown evidence type accepted")
	}
}
