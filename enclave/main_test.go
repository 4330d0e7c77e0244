package enclave

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/boundary/shm"

	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// testImage is the image of ./internal/testimage, built once by TestMain.
var testImage *Image

// testRoot is the simulation root of the enclaves the tests start.
var testRoot = mustEphemeralRoot()

func mustEphemeralRoot() *attest.SimulationRoot {
	r, err := attest.NewEphemeralSimulationRoot()
	if err != nil {
		panic(err)
	}
	return r
}

func TestMain(m *testing.M) {
	switch os.Getenv("ENCLAVE_TEST_ECHO_CHILD") {
	case "1":
		echoChild()
		return
	case "shm":
		shmEchoChild()
		return
	}
	if os.Getenv(envHostChild) != "" {
		hostChild()
		return
	}
	os.Exit(testenv.Run(m, "enclave-test-", func(ctx context.Context, dir string) (err error) {
		testImage, err = Build(ctx, "./internal/testimage", filepath.Join(dir, "testimage"), BuildOptions{ProductID: 7, SVN: 3})
		if err != nil {
			return fmt.Errorf("building the test image: %w", err)
		}
		return nil
	}))
}

// echoChild is the reference peer of the raw pipe benchmark: it copies
// stdin to stdout.
func echoChild() {
	buf := make([]byte, 256<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			if _, err := os.Stdout.Write(buf[:n]); err != nil {
				os.Exit(1)
			}
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// shmEchoChild is the reference peer of the raw shared-memory benchmark:
// it copies what arrives in the region's ECALL ring to its OCALL ring
// (pipes on descriptors 3 and 4, the region on 5).
func shmEchoChild() {
	reg, err := shm.OpenOffer(os.Getenv(shm.EnvRegion))
	if err != nil {
		os.Exit(2)
	}
	syscall.SetNonblock(3, true)
	syscall.SetNonblock(4, true)
	in, out := os.NewFile(3, "ecall"), os.NewFile(4, "ocall")
	// A one-byte handshake, echoed like the rest.
	st, err := shm.NewStream(reg, shm.Enclave, in, out, shm.Options{HandshakeBytes: 1})
	if err != nil {
		os.Exit(2)
	}
	buf := make([]byte, 256<<10)
	for {
		n, err := st.Read(buf)
		if n > 0 {
			if _, err := st.Write(buf[:n]); err != nil {
				os.Exit(1)
			}
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// logBuffer is a concurrency-safe log sink for assertions.
type logBuffer = syncbuf.Buffer

// debugLogger logs everything, down to debug, into l.
func debugLogger(l *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
