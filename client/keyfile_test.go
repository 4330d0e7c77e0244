package client

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meter-7.pem")
	k, err := NewKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	back, err := LoadKeyFile(path)
	if err != nil || !back.Equal(k) {
		t.Fatalf("loaded %v, %v", back, err)
	}
	if _, err := NewKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("an existing key file was not refused: %v", err)
	}
	if again, _ := LoadKeyFile(path); !again.Equal(k) {
		t.Fatal("the existing key changed")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(bad); err == nil || !strings.Contains(err.Error(), `want a PEM "PRIVATE KEY" block`) {
		t.Fatalf("a file without a key: %v", err)
	}
}
