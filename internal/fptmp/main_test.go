package fp

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/enclave"
)

func TestPrint(t *testing.T) {
	for _, p := range strings.Fields(os.Getenv("PKGS")) {
		f, err := enclave.MeasureFootprint(context.Background(), "/work/wt-vocab", p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%s: %s\n", p, f.Figures())
		if os.Getenv("DETAIL") != "" {
			for _, q := range f.Packages {
				if q.Own {
					fmt.Printf("   %6d %s\n", q.CodeLines, q.ImportPath)
				}
			}
		}
		if f.Has("crypto/x509") {
			fmt.Printf("   without crypto/x509: %s\n", f.Without("crypto/x509").Figures())
		}
	}
}
