// Package secretfile reads and creates the server-side secret shared by every keysd and
// keysctl of one deployment: it keys the hashes of secret keys and signs admin tokens.
package secretfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Size is the number of random bytes in a new secret.
const Size = 32

// Load reads the secret at path: hex text (as Create writes it), or at least 32 raw bytes.
func Load(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret file %s: %w", path, err)
	}
	text := strings.TrimSpace(string(b))
	if raw, err := hex.DecodeString(text); err == nil && len(raw) >= Size {
		return raw, nil
	}
	if len(b) >= Size {
		return b, nil
	}
	return nil, fmt.Errorf("secret file %s holds %d bytes; it needs at least %d random bytes (or %d hex characters)", path, len(b), Size, 2*Size)
}

// LoadOrCreate reads the secret at path, creating it (mode 0600, with its directory) when it
// does not exist. created tells whether it was made now.
func LoadOrCreate(path string) (secret []byte, created bool, err error) {
	secret, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return secret, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create secret file directory: %w", err)
	}
	secret = make([]byte, Size)
	if _, err := rand.Read(secret); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		secret, err = Load(path)
		return secret, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create secret file %s: %w", path, err)
	}
	if _, err := f.WriteString(hex.EncodeToString(secret) + "\n"); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("write secret file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, false, err
	}
	return secret, true, f.Close()
}
