package enclave

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestThisToolkitFindsTheCheckout(t *testing.T) {
	tk := ThisToolkit()
	if !tk.Development() {
		t.Fatalf("a test binary is a development build, got %+v", tk)
	}
	if modulePath(filepath.Join(tk.Checkout, "go.mod")) != ToolkitModule {
		t.Fatalf("checkout %s is not the Cloister module", tk.Checkout)
	}
}

// TestBuildPackageOutsideTheModule builds the coordinator's image from a
// directory outside any module, as cloister does for a user's application:
// it must come from a module of its own that replaces Cloister with this
// checkout, and say so.
func TestBuildPackageOutsideTheModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/elsewhere\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var notice bytes.Buffer
	img, err := BuildPackage(context.Background(), ToolkitModule+"/coordinator/image", filepath.Join(dir, "coord.img"), BuildOptions{Dir: dir}, &notice)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notice.String(), "local checkout") {
		t.Errorf("no notice of the development build: %q", notice.String())
	}
	if img.Meta.Package != ToolkitModule+"/coordinator/image" {
		t.Errorf("image package %q", img.Meta.Package)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.sum")); err == nil {
		t.Error("the user's module was changed (go.sum written)")
	}
}

func TestBuildPackageRefusesAForeignMissingPackage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/elsewhere\n\ngo 1.26\n"), 0o644)
	_, err := BuildPackage(context.Background(), "example.com/elsewhere/nothere", filepath.Join(dir, "x.img"), BuildOptions{Dir: dir}, nil)
	if err == nil {
		t.Fatal("built a package that does not exist")
	}
}

// TestBuildPackageInTheCheckout: inside a Cloister checkout, Cloister's
// images build from it, with no notice of a module of their own.
func TestBuildPackageInTheCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image")
	}
	var notice bytes.Buffer
	img, err := BuildPackage(context.Background(), ToolkitModule+"/coordinator/image", filepath.Join(t.TempDir(), "coord.img"), BuildOptions{Dir: ThisToolkit().Checkout}, &notice)
	if err != nil {
		t.Fatal(err)
	}
	if notice.Len() != 0 || img.Measurement == (Measurement{}) {
		t.Errorf("notice %q, measurement %s", notice.String(), img.Measurement)
	}
}
