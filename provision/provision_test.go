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
	})
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
