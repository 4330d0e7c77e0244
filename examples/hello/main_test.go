package main

import (
	"context"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/syncbuf"
)

type syncBuffer = syncbuf.Buffer

func TestHello(t *testing.T) {
	var out syncBuffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"news: hello, Ada", "news: hello, Radia", "code 400: send a name", "deployment greeter  UP  handled=6"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
