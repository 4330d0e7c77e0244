package secure

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestDeriveAddressKey(t *testing.T) {
	root := bytes.Repeat([]byte{7}, 32)
	a1, err := DeriveAddressKey(root, addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := DeriveAddressKey(root, addr, 1)
	a2, _ := DeriveAddressKey(root, addr, 2)
	b1, _ := DeriveAddressKey(root, "water.alerts", 1)
	other, _ := DeriveAddressKey(bytes.Repeat([]byte{8}, 32), addr, 1)
	if a1 != again {
		t.Fatal("not deterministic")
	}
	for _, k := range []AddressKey{a2, b1, other} {
		if k.Key == a1.Key {
			t.Fatal("keys repeat across epochs, addresses or roots")
		}
	}
	if _, err := DeriveAddressKey(root[:16], addr, 1); err == nil {
		t.Fatal("short root accepted")
	}
}

func TestAddressKeyEncodings(t *testing.T) {
	k := mustKey(t, addr, 9)
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var k2 AddressKey
	if err := k2.UnmarshalBinary(b); err != nil || k2 != k {
		t.Fatalf("binary: %v", err)
	}
	for n := range len(b) {
		if err := k2.UnmarshalBinary(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if err := k2.UnmarshalBinary(append(b, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatal("trailing byte accepted")
	}
	j, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var k3 AddressKey
	if err := json.Unmarshal(j, &k3); err != nil || k3 != k {
		t.Fatalf("json: %v %s", err, j)
	}
	for _, bad := range []string{`{"address":"","epoch":1,"key":"AAAA"}`, `{"address":"a","epoch":1,"key":"AAAA"}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &k3); err == nil {
			t.Fatalf("accepted %s", bad)
		}
	}
}
