package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/scanner"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SDKModule is the module path of this toolkit: its packages count as code
// of our own in a Footprint.
const SDKModule = "github.com/cloister-dev/cloister"

// Footprint is what an enclave image links, as go list -deps reports it for
// the build's platform, with the lines of each package's non-test Go files.
// It is how a reviewer sizes the trusted code an image's measurement
// vouches for.
type Footprint struct {
	// Image is the import path of the image's main package.
	Image string
	// Packages are the linked packages, dependencies first (go list
	// order), the image last.
	Packages []LinkedPackage
}

// LinkedPackage is one package of a Footprint.
type LinkedPackage struct {
	ImportPath string
	// Module is the package's module path ("" for the standard library).
	Module string
	// Own is true for packages of this toolkit and of the image's module:
	// code of our own, as opposed to the standard library and other
	// modules.
	Own bool
	// Imports are the package's direct imports (as linked).
	Imports []string
	// Lines counts every line of its Go files; CodeLines those holding
	// code (not blank, not only comments).
	Lines, CodeLines int
}

// Figures sum a Footprint by origin.
type Figures struct {
	// OwnCodeLines are the code lines of our own (this toolkit and the
	// image's module); OwnLines every line of those files.
	OwnCodeLines, OwnLines, OwnPackages int
	// StdCodeLines and OtherCodeLines are the code lines of the standard
	// library and of other modules.
	StdCodeLines, StdPackages     int
	OtherCodeLines, OtherPackages int
}

// Figures sums f.
func (f *Footprint) Figures() Figures {
	var s Figures
	for _, p := range f.Packages {
		switch {
		case p.Own:
			s.OwnCodeLines += p.CodeLines
			s.OwnLines += p.Lines
			s.OwnPackages++
		case p.Module == "":
			s.StdCodeLines += p.CodeLines
			s.StdPackages++
		default:
			s.OtherCodeLines += p.CodeLines
			s.OtherPackages++
		}
	}
	return s
}

// String renders the figures on one line, as cloister enclave build prints
// them.
func (s Figures) String() string {
	return fmt.Sprintf("%d code lines of our own (%d packages, %d lines with comments and blanks); links %d code lines of the standard library (%d packages) and %d of other modules (%d packages)",
		s.OwnCodeLines, s.OwnPackages, s.OwnLines, s.StdCodeLines, s.StdPackages, s.OtherCodeLines, s.OtherPackages)
}

// Has reports whether f links the package with import path p.
func (f *Footprint) Has(p string) bool {
	for _, q := range f.Packages {
		if q.ImportPath == p {
			return true
		}
	}
	return false
}

// Without returns the footprint f would have if the package cut were not
// linked: the packages still reachable from the image without going
// through cut. (Without("crypto/x509") shows what X.509 parsing costs.)
func (f *Footprint) Without(cut string) *Footprint {
	byPath := make(map[string]*LinkedPackage, len(f.Packages))
	for i := range f.Packages {
		byPath[f.Packages[i].ImportPath] = &f.Packages[i]
	}
	keep := map[string]bool{}
	var walk func(p string)
	walk = func(p string) {
		if p == cut || keep[p] || byPath[p] == nil {
			return
		}
		keep[p] = true
		for _, q := range byPath[p].Imports {
			walk(q)
		}
	}
	walk(f.Image)
	out := &Footprint{Image: f.Image}
	for _, p := range f.Packages {
		if keep[p.ImportPath] {
			out.Packages = append(out.Packages, p)
		}
	}
	return out
}

// listedPackage is the part of go list -json this package reads.
type listedPackage struct {
	ImportPath string
	Dir        string
	Standard   bool
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	Module     *struct{ Path string }
	DepOnly    bool
}

// MeasureFootprint runs go list -deps on pkg (a package pattern naming one
// main package, resolved in dir; "" is the current directory) and counts
// the lines of every linked package. Code lines of our own are those of
// this toolkit's packages and of pkg's module.
func MeasureFootprint(ctx context.Context, dir, pkg string) (*Footprint, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-json=ImportPath,Dir,Standard,GoFiles,CgoFiles,Imports,Module,DepOnly", pkg)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("enclave: go list -deps %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	var listed []listedPackage
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("enclave: go list -deps %s: %w", pkg, err)
		}
		listed = append(listed, p)
	}
	var roots []listedPackage
	for _, p := range listed {
		if !p.DepOnly {
			roots = append(roots, p)
		}
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("enclave: %s names %d packages; measure one image at a time", pkg, len(roots))
	}
	own := map[string]bool{SDKModule: true}
	if roots[0].Module != nil {
		own[roots[0].Module.Path] = true
	}
	f := &Footprint{Image: roots[0].ImportPath}
	for _, p := range listed {
		lp := LinkedPackage{ImportPath: p.ImportPath, Imports: p.Imports}
		if p.Module != nil && !p.Standard {
			lp.Module = p.Module.Path
			lp.Own = own[lp.Module]
		}
		for _, name := range append(p.GoFiles, p.CgoFiles...) {
			src, err := os.ReadFile(filepath.Join(p.Dir, name))
			if err != nil {
				return nil, fmt.Errorf("enclave: measure %s: %w", p.ImportPath, err)
			}
			lines, code := CountLines(src)
			lp.Lines += lines
			lp.CodeLines += code
		}
		f.Packages = append(f.Packages, lp)
	}
	return f, nil
}

// CountLines counts the lines of Go source src and those holding code:
// lines with a token that is not a comment (a raw string spanning lines
// counts every line it spans).
func CountLines(src []byte) (lines, code int) {
	lines = bytes.Count(src, []byte("\n"))
	if len(src) > 0 && src[len(src)-1] != '\n' {
		lines++
	}
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(src))
	var s scanner.Scanner
	s.Init(file, src, nil, 0) // comments skipped; errors do not stop the count
	last := 0
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		if tok == token.SEMICOLON && lit == "\n" {
			continue // inserted at a line end, not code of its own
		}
		first := file.Line(pos)
		end := first + strings.Count(lit, "\n")
		if first <= last {
			first = last + 1
		}
		if end >= first {
			code += end - first + 1
			last = end
		}
	}
	return lines, code
}
