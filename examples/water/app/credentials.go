package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/secure"
)

// credentialsFile is where, in the state directory, the sensors' client
// credentials are kept: sensor ID → base64 of the Ed25519 seed (mode 0600).
// The manifest lists their public keys, so a run that keeps its state
// directory keeps its manifest hash.
const credentialsFile = "sensor-credentials.json"

// Credentials are the sensors' client credentials by sensor ID.
type Credentials map[string]secure.Credential

// LoadOrCreateCredentials returns a credential for every sensor in ids,
// from dir's credentials file, creating keys for sensors it does not list
// yet. Processes that share dir (one per node) agree on the keys: the file
// is replaced atomically, and a process that loses a race to create it
// reads the winner's.
func LoadOrCreateCredentials(dir string, ids []string) (Credentials, error) {
	path := filepath.Join(dir, credentialsFile)
	for range 3 {
		seeds := map[string]string{}
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &seeds); err != nil {
				return nil, fmt.Errorf("app: %s: %w", path, err)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return nil, fmt.Errorf("app: sensors' credentials: %w", err)
		}
		creds := Credentials{}
		missing := false
		for _, id := range ids {
			s, ok := seeds[id]
			if !ok {
				seed := make([]byte, ed25519.SeedSize)
				if _, err := rand.Read(seed); err != nil {
					return nil, fmt.Errorf("app: sensors' credentials: %w", err)
				}
				s, missing = base64.StdEncoding.EncodeToString(seed), true
				seeds[id] = s
			}
			seed, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("app: %s: sensor %s: not a base64 Ed25519 seed", path, id)
			}
			creds[id] = secure.Credential{Name: id, Key: ed25519.NewKeyFromSeed(seed)}
		}
		if !missing {
			return creds, nil
		}
		out, _ := json.MarshalIndent(seeds, "", "  ")
		if err := writeNew(path, out, b); err != nil {
			if errors.Is(err, errChanged) {
				continue // another process wrote it first: read theirs
			}
			return nil, fmt.Errorf("app: sensors' credentials: %w", err)
		}
		return creds, nil
	}
	return nil, fmt.Errorf("app: %s keeps changing under this process", path)
}

var errChanged = errors.New("changed meanwhile")

// writeNew replaces path with b if it still holds old (nil: it does not
// exist), atomically: a temporary file, then a link (for a new file, which
// fails if another process made it) or a rename.
func writeNew(path string, b, old []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if old == nil {
		if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
			return errChanged
		} else if err != nil {
			return err
		}
		return nil
	}
	if now, err := os.ReadFile(path); err != nil || string(now) != string(old) {
		return errChanged
	}
	return os.Rename(tmp.Name(), path)
}

// publicKeys returns each sensor's public key.
func (creds Credentials) publicKeys() map[string]ed25519.PublicKey {
	keys := make(map[string]ed25519.PublicKey, len(creds))
	for id, c := range creds {
		keys[id] = c.Key.Public().(ed25519.PublicKey)
	}
	return keys
}
