package bus_test

import (
	"testing"

	"github.com/cloister-dev/cloister/bus"
)

func TestMatchAddress(t *testing.T) {
	for _, c := range []struct {
		pattern, address string
		want             bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {">", "a", true}, {"*", "a.b", false},
		{"a.b.c", "a.b", false}, {"a", "a.b", false},
	} {
		if got := bus.MatchAddress(c.pattern, c.address); got != c.want {
			t.Errorf("MatchAddress(%q, %q) = %v, want %v", c.pattern, c.address, got, c.want)
		}
	}
	for _, p := range []string{"", "a.>.b", "a..b", "a b"} {
		if bus.ValidatePattern(p) == nil {
			t.Errorf("ValidatePattern(%q) accepted it", p)
		}
	}
	if err := bus.ValidatePattern("water.*.>"); err != nil {
		t.Error(err)
	}
}
