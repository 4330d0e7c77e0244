package shm

import (
	"fmt"
	"io"
	"os"

	"github.com/cloister-dev/cloister/boundary"
)

// Adopt is the enclave image's side of the offer: it takes the region the
// host offers in EnvRegion, if any, and returns a stream over it and the
// boundary's descriptors r and w, whose handshake still crosses r and w.
// Without an offer, or with a region this image cannot use, it returns r
// and w (the host then stays on them) and says why on stderr. Set it as
// trusted.Options.SharedMemory to opt in.
func Adopt(r, w *os.File) (io.Reader, io.Writer) {
	v := os.Getenv(EnvRegion)
	if v == "" {
		return r, w
	}
	reg, err := OpenOffer(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "trusted: not using the shared-memory boundary, staying on pipes: %v\n", err)
		return r, w
	}
	st, err := NewStream(reg, Enclave, r, w, Options{HandshakeBytes: boundary.HelloSize})
	if err != nil {
		reg.Close()
		fmt.Fprintf(os.Stderr, "trusted: not using the shared-memory boundary, staying on pipes: %v\n", err)
		return r, w
	}
	return st, st
}
