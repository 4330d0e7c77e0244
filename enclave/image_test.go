package enclave

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestBuildIsReproducibleAndMeasured(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	out := filepath.Join(dir, "one")
	img, err := Build(ctx, "./internal/testimage", out, BuildOptions{ProductID: 7, SVN: 3})
	if err != nil {
		t.Fatal(err)
	}
	img2, err := Build(ctx, "./internal/testimage", filepath.Join(dir, "two"), BuildOptions{ProductID: 7, SVN: 3})
	if err != nil {
		t.Fatal(err)
	}
	if img.Measurement != img2.Measurement {
		t.Fatalf("two builds of the same source differ: %s vs %s", img.Measurement, img2.Measurement)
	}
	m, err := Measure(out)
	if err != nil || m != img.Measurement {
		t.Fatalf("Measure = %s, %v; want %s", m, err, img.Measurement)
	}
	meta := img.Meta
	if meta.Measurement != m.String() || meta.ProductID != 7 || meta.SVN != 3 || meta.SignerName != DefaultSigner {
		t.Fatalf("metadata %+v", meta)
	}
	signer := SignerID(DefaultSigner)
	if meta.Signer != hex.EncodeToString(signer[:]) {
		t.Fatalf("signer %s", meta.Signer)
	}
	if meta.GoVersion != runtime.Version() || meta.Package != "github.com/cloister-dev/cloister/enclave/internal/testimage" {
		t.Fatalf("go version %q package %q", meta.GoVersion, meta.Package)
	}
	id := img.Identity()
	if id.MREnclave != [32]byte(m) || id.MRSigner != signer || id.ProductID != 7 || id.SVN != 3 {
		t.Fatalf("identity %+v", id)
	}
	if _, err := os.Stat(out + MetadataSuffix); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefusesChangedImage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
	data, err := os.ReadFile(testImage.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrNoMetadata) {
		t.Fatalf("Load without metadata: %v, want ErrNoMetadata", err)
	}
	if _, err := WriteMetadata(path, MetadataOptions{Signer: "someone"}); err != nil {
		t.Fatal(err)
	}
	img, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if img.Measurement != testImage.Measurement || img.Meta.SignerName != "someone" {
		t.Fatalf("loaded %+v", img.Meta)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if !errors.Is(err, ErrImageChanged) {
		t.Fatalf("Load of a changed image: %v, want ErrImageChanged", err)
	}
	t.Log(err)
}

func TestBuildFailureSaysWhy(t *testing.T) {
	ctx := context.Background()
	_, err := Build(ctx, "./no/such/package", filepath.Join(t.TempDir(), "x"), BuildOptions{})
	if err == nil || !contains(err.Error(), "no/such/package") {
		t.Fatalf("err = %v", err)
	}
}
