package enclave

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cloister-dev/cloister/boundary"
)

// MetadataSuffix is appended to an image's path to name its metadata file.
const MetadataSuffix = ".meta.json"

// MetadataFormat is the version of the metadata file layout.
const MetadataFormat = 1

// DefaultSigner is the signer name of images built without one.
const DefaultSigner = "cloister-dev"

// Measurement is the SHA-256 of an image file. Under simulation
// (the inproc and process backends) it is the enclave's MRENCLAVE.
type Measurement [32]byte

// String returns the measurement in lower-case hex.
func (m Measurement) String() string { return hex.EncodeToString(m[:]) }

// ParseMeasurement parses 64 hex digits.
func ParseMeasurement(s string) (Measurement, error) {
	var m Measurement
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(m) {
		return m, fmt.Errorf("enclave: measurement %q is not 64 hex digits", s)
	}
	copy(m[:], b)
	return m, nil
}

// SignerID returns the simulated MRSIGNER of a signer name:
// SHA-256("cloister simulated signer\x00" ‖ name). Under Gramine the real
// MRSIGNER is the hash of the signing key instead.
func SignerID(name string) [32]byte {
	return sha256.Sum256([]byte("cloister simulated signer\x00" + name))
}

// Metadata describes an image; it is written beside the image as
// IMAGE.meta.json.
type Metadata struct {
	// Format is MetadataFormat.
	Format int `json:"format"`
	// Measurement is the hex SHA-256 of the image (the simulated MRENCLAVE).
	Measurement string `json:"measurement"`
	// Size is the image's size in bytes.
	Size int64 `json:"size"`
	// SignerName names who vouches for the image; Signer is its simulated
	// MRSIGNER (see SignerID), in hex.
	SignerName string `json:"signer_name"`
	Signer     string `json:"signer"`
	// ProductID and SVN are the ISV product ID and security version.
	ProductID uint16 `json:"product_id"`
	SVN       uint16 `json:"svn"`
	// GoVersion is the toolchain the image was built with.
	GoVersion string `json:"go_version"`
	// Package is the image's main package path.
	Package string `json:"package"`
	// GOOS and GOARCH are the image's target platform.
	GOOS   string `json:"goos"`
	GOARCH string `json:"goarch"`
}

// Identity returns the enclave identity the metadata describes, as the
// boundary protocol's Init carries it.
func (m *Metadata) Identity() (boundary.Identity, error) {
	var id boundary.Identity
	mr, err := ParseMeasurement(m.Measurement)
	if err != nil {
		return id, err
	}
	id.MREnclave = mr
	s, err := hex.DecodeString(m.Signer)
	if err != nil || len(s) != 32 {
		return id, fmt.Errorf("enclave: metadata signer %q is not 64 hex digits", m.Signer)
	}
	copy(id.MRSigner[:], s)
	id.ProductID, id.SVN = m.ProductID, m.SVN
	return id, nil
}

// Image is an enclave image on disk whose measurement matched its metadata
// when it was loaded.
type Image struct {
	// Path is the image file (absolute).
	Path string
	// Meta is its metadata.
	Meta Metadata
	// Measurement is the SHA-256 of the file.
	Measurement Measurement
}

// Identity returns the image's enclave identity.
func (img *Image) Identity() boundary.Identity {
	id, _ := img.Meta.Identity() // validated by Load
	return id
}

// Name returns the image's file name without directory.
func (img *Image) Name() string { return filepath.Base(img.Path) }

// BuildOptions configure Build.
type BuildOptions struct {
	// Dir is the directory go build runs in (the module of pkg); default
	// the current directory.
	Dir string
	// Go is the go command; default "go" from PATH.
	Go string
	// Signer names the image's signer (default DefaultSigner).
	Signer string
	// ProductID and SVN are recorded in the metadata.
	ProductID uint16
	SVN       uint16
	// Tags are extra build tags.
	Tags []string
	// Env is extra environment for go build (e.g. GOFLAGS); CGO_ENABLED=0
	// is always set, as images are static.
	Env []string
	// Stderr receives go build's output; nil collects it into the error.
	Stderr io.Writer
}

// ErrImageChanged is wrapped by Load's error when the image's hash no
// longer matches its metadata.
var ErrImageChanged = errors.New("enclave: image does not match its metadata (changed since it was measured)")

// ErrNoMetadata is wrapped by Load's error when the metadata file is
// missing.
var ErrNoMetadata = errors.New("enclave: image has no metadata file")

// Build compiles the main package pkg into a static, reproducible enclave
// image at out: go build -trimpath -buildvcs=false -ldflags=-buildid= with
// CGO_ENABLED=0. Building the same source with the same toolchain twice
// gives the same bytes, hence the same measurement. Build then writes the
// metadata beside the image and returns the loaded image.
func Build(ctx context.Context, pkg, out string, opts BuildOptions) (*Image, error) {
	if pkg == "" || out == "" {
		return nil, errors.New("enclave: build: need a package and an output path")
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, fmt.Errorf("enclave: build: %w", err)
	}
	if opts.Dir != "" && !filepath.IsAbs(out) {
		// A relative output is relative to the caller, not to Dir.
		out = abs
	}
	gocmd := opts.Go
	if gocmd == "" {
		gocmd = "go"
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("enclave: build: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".building")
	defer os.Remove(tmp)
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-o", tmp}
	if len(opts.Tags) > 0 {
		args = append(args, "-tags", strings.Join(opts.Tags, ","))
	}
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, gocmd, args...)
	cmd.Dir = opts.Dir
	cmd.Env = append(append(os.Environ(), opts.Env...), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	if opts.Stderr != nil {
		cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return nil, fmt.Errorf("enclave: build %s: %w:\n%s", pkg, err, msg)
		}
		return nil, fmt.Errorf("enclave: build %s: %w", pkg, err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return nil, fmt.Errorf("enclave: build: %w", err)
	}
	if _, err := WriteMetadata(abs, MetadataOptions{Signer: opts.Signer, ProductID: opts.ProductID, SVN: opts.SVN}); err != nil {
		return nil, err
	}
	return Load(abs)
}

// MetadataOptions are the facts about an image that its bytes do not say.
type MetadataOptions struct {
	Signer    string // default DefaultSigner
	ProductID uint16
	SVN       uint16
}

// WriteMetadata measures the image at path and writes IMAGE.meta.json
// beside it (atomically), for images built by other means than Build.
func WriteMetadata(path string, opts MetadataOptions) (*Metadata, error) {
	m, size, err := measure(path)
	if err != nil {
		return nil, err
	}
	if opts.Signer == "" {
		opts.Signer = DefaultSigner
	}
	signer := SignerID(opts.Signer)
	meta := &Metadata{
		Format: MetadataFormat, Measurement: m.String(), Size: size,
		SignerName: opts.Signer, Signer: hex.EncodeToString(signer[:]),
		ProductID: opts.ProductID, SVN: opts.SVN,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
	}
	if bi, err := buildinfo.ReadFile(path); err == nil {
		meta.GoVersion, meta.Package = bi.GoVersion, bi.Path
		for _, s := range bi.Settings {
			switch s.Key {
			case "GOOS":
				meta.GOOS = s.Value
			case "GOARCH":
				meta.GOARCH = s.Value
			}
		}
	}
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("enclave: metadata: %w", err)
	}
	if err := writeFileAtomic(path+MetadataSuffix, append(data, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("enclave: write metadata: %w", err)
	}
	return meta, nil
}

// Measure returns the SHA-256 of the image at path.
func Measure(path string) (Measurement, error) {
	m, _, err := measure(path)
	return m, err
}

func measure(path string) (Measurement, int64, error) {
	var m Measurement
	f, err := os.Open(path)
	if err != nil {
		return m, 0, fmt.Errorf("enclave: measure: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return m, 0, fmt.Errorf("enclave: measure %s: %w", path, err)
	}
	h.Sum(m[:0])
	return m, n, nil
}

// Load reads the image at path and its metadata and checks that the image
// still has the measurement the metadata records. A changed image fails
// with an error wrapping ErrImageChanged; a missing metadata file with
// ErrNoMetadata.
func Load(path string) (*Image, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("enclave: load: %w", err)
	}
	raw, err := os.ReadFile(abs + MetadataSuffix)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s%s not found (build the image with 'cloister enclave build', or write it with 'cloister enclave measure --write')", ErrNoMetadata, abs, MetadataSuffix)
		}
		return nil, fmt.Errorf("enclave: load: %w", err)
	}
	var meta Metadata
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return nil, fmt.Errorf("enclave: load %s%s: %w", abs, MetadataSuffix, err)
	}
	if meta.Format != MetadataFormat {
		return nil, fmt.Errorf("enclave: load %s%s: metadata format %d, this version reads %d", abs, MetadataSuffix, meta.Format, MetadataFormat)
	}
	if _, err := meta.Identity(); err != nil {
		return nil, fmt.Errorf("enclave: load %s%s: %w", abs, MetadataSuffix, err)
	}
	m, _, err := measure(abs)
	if err != nil {
		return nil, err
	}
	if m.String() != meta.Measurement {
		return nil, fmt.Errorf("%w: %s has SHA-256 %s, its metadata says %s", ErrImageChanged, abs, m, meta.Measurement)
	}
	return &Image{Path: abs, Meta: meta, Measurement: m}, nil
}

// writeFileAtomic writes data to a temporary file in path's directory,
// syncs it and renames it over path, so readers see the old or the new
// content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	_ = syncDir(filepath.Dir(path))
	return nil
}

// writeTemp writes data to a new temporary file next to path and syncs
// it; it returns the temporary file's name (removed on error).
func writeTemp(path string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
