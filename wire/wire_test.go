package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateAddress(t *testing.T) {
	for _, ok := range []string{"a", "water.readings", "cloister.coordinator.join", "A-Z_a:z/0.9", strings.Repeat("x", MaxAddressLen)} {
		if err := ValidateAddress(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for bad, why := range map[string]string{
		"":                                   "empty",
		strings.Repeat("x", MaxAddressLen+1): "longer than 255 bytes",
		"$SYS.x":                             "must not start with '$'",
		"a..b":                               "empty segment at byte 2",
		".a":                                 "empty segment at byte 0",
		"a.":                                 "ends with a dot",
		"water.*":                            "wildcards are not allowed: character '*' at byte 6",
		"water.>":                            "wildcards are not allowed",
		"a b":                                "character ' ' at byte 1 is not allowed",
		"é":                                  "is not allowed",
	} {
		err := ValidateAddress(bad)
		var ae *AddressError
		if !errors.As(err, &ae) || ae.Address != bad || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v (want %q)", bad, err, why)
		}
	}
}

func TestKindsAndFailures(t *testing.T) {
	for k, name := range map[Kind]string{KindSend: "send", KindPublish: "publish", KindRequest: "request", KindReply: "reply", 0: "kind(0)", 9: "kind(9)"} {
		if k.String() != name || k.Valid() != !strings.HasPrefix(name, "kind(") {
			t.Errorf("%d: %s, valid %v", k, k, k.Valid())
		}
	}
	for f := FailureError; f <= MaxFailure; f++ {
		if g, ok := ParseFailure(f.String()); !ok || g != f {
			t.Errorf("%s does not parse back: %v %v", f, g, ok)
		}
	}
	if _, ok := ParseFailure("none"); ok {
		t.Error(`"none" parsed as a failure`)
	}
	if s := Failure(7).String(); s != "failure(7)" {
		t.Error(s)
	}
}

// FuzzValidateAddress: addresses arrive from the bus and the manifest.
// Whatever the bytes, the grammar accepts only addresses of allowed
// characters, within MaxAddressLen, and says why it refuses the rest.
func FuzzValidateAddress(f *testing.F) {
	for _, s := range []string{"water.readings", "cloister.coordinator.epoch", "a..b", "water.*", "$SYS", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateAddress(s)
		if err == nil {
			if s == "" || len(s) > MaxAddressLen || strings.ContainsAny(s, "*> $") || strings.Contains(s, "..") {
				t.Fatalf("accepted %q", s)
			}
			return
		}
		var ae *AddressError
		if !errors.As(err, &ae) || ae.Reason == "" {
			t.Fatalf("%q: %v", s, err)
		}
	})
}
