package enclave

import (
	"testing"
)

func TestParseRejections(t *testing.T) {
	for _, detail := range []string{"", "draining", "something else"} {
		r, err := parseRejections(detail)
		if err != nil || len(r) != 0 {
			t.Errorf("%q: %v, %v", detail, r, err)
		}
	}
	r, err := parseRejections(`rejected={"sec.news":{"auth":2,"replay":1}}`)
	if err != nil || r["sec.news"]["auth"] != 2 || r["sec.news"]["replay"] != 1 {
		t.Fatalf("%v, %v", r, err)
	}
	if _, err := parseRejections(`rejected={"sec.news":{"auth":-1}}`); err == nil {
		t.Fatal("a negative count was accepted")
	}
	if _, err := parseRejections(`rejected=[`); err == nil {
		t.Fatal("bad JSON was accepted")
	}
}

// FuzzParseRejections: a hostile enclave's health detail never panics the
// host.
func FuzzParseRejections(f *testing.F) {
	f.Add(`rejected={"a":{"auth":1}}`)
	f.Add(`rejected=`)
	f.Add(`rejected={"a":null}`)
	f.Add(`rejected=null`)
	f.Fuzz(func(t *testing.T, detail string) {
		r, err := parseRejections(detail)
		if err == nil && r == nil {
			t.Fatal("nil map without an error")
		}
	})
}
