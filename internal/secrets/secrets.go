// Package secrets keeps the credentials of the vaults a lifeboat server
// knows — each vault's passphrase and S3 settings — in one file of its
// data directory (mode 0600, written whole by rename), apart from the
// catalog: they are never in the catalog, its snapshots in the vault, the
// API's answers, job specs or logs. Agents receive what a job needs with
// the job, over their authenticated connection to the server.
package secrets

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Credential is what opens one vault.
type Credential struct {
	Password string `json:"password,omitempty"`
	// S3 holds S3 settings by their environment names (S3Keys).
	S3 map[string]string `json:"s3,omitempty"`
}

// S3Keys are the settings a Credential may carry, named as the
// environment variables lifeboat reads them from.
var S3Keys = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
	"LIFEBOAT_S3_ENDPOINT", "LIFEBOAT_S3_ALLOW_HTTP"}

// ErrInvalid is wrapped by errors about a credential that cannot be kept.
var ErrInvalid = errors.New("invalid credential")

// Validate refuses settings lifeboat would not read.
func (c Credential) Validate() error {
	for k := range c.S3 {
		if !isS3Key(k) {
			return fmt.Errorf("%w: S3 setting %q: want one of %s", ErrInvalid, k, strings.Join(S3Keys, ", "))
		}
	}
	if strings.ContainsAny(c.Password, "\n\r") {
		return fmt.Errorf("%w: a passphrase holds no line break", ErrInvalid)
	}
	return nil
}

func isS3Key(k string) bool {
	for _, s := range S3Keys {
		if s == k {
			return true
		}
	}
	return false
}

// Getenv returns getenv with the credential's S3 settings in front.
func (c Credential) Getenv(getenv func(string) string) func(string) string {
	return func(k string) string {
		if v, ok := c.S3[k]; ok {
			return v
		}
		if getenv == nil {
			return ""
		}
		return getenv(k)
	}
}

// ParseEnvFile reads S3 settings written as KEY=VALUE lines (blank lines
// and # comments skipped), as an --s3-key-file holds them.
func ParseEnvFile(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		if !ok || !isS3Key(k) {
			return nil, fmt.Errorf("%w: line %d: want KEY=VALUE with KEY one of %s", ErrInvalid, n, strings.Join(S3Keys, ", "))
		}
		out[k] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out, sc.Err()
}

// File is the credentials file of a server. Safe for concurrent use.
type File struct {
	path string
	mu   sync.Mutex
}

// Open returns the credentials file at path (which need not exist yet).
func Open(path string) *File { return &File{path: path} }

func (f *File) load() (map[string]Credential, error) {
	raw, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Credential{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the credentials file %s: %w", f.path, err)
	}
	vaults, err := parseFile(raw)
	if err != nil {
		return nil, fmt.Errorf("the credentials file %s is damaged or of another version: %w", f.path, err)
	}
	return vaults, nil
}

// parseFile reads a credentials file's content. Every credential in it
// must pass Validate, as it did when Put kept it.
func parseFile(raw []byte) (map[string]Credential, error) {
	var doc struct {
		Version int                   `json:"version"`
		Vaults  map[string]Credential `json:"vaults"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("version %d", doc.Version)
	}
	for name, c := range doc.Vaults {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("vault %q: %w", name, err)
		}
	}
	if doc.Vaults == nil {
		doc.Vaults = map[string]Credential{}
	}
	return doc.Vaults, nil
}

// Get returns the credential kept for vault name.
func (f *File) Get(name string) (Credential, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	all, err := f.load()
	if err != nil {
		return Credential{}, false, err
	}
	c, ok := all[name]
	return c, ok, nil
}

// Names lists the vaults that have a credential, sorted.
func (f *File) Names() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	all, err := f.load()
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Put keeps c for vault name, replacing what was kept.
func (f *File) Put(name string, c Credential) error {
	if err := c.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	all, err := f.load()
	if err != nil {
		return err
	}
	all[name] = c
	raw, err := json.MarshalIndent(map[string]any{"version": 1, "vaults": all}, "", " ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".secrets-*")
	if err != nil {
		return fmt.Errorf("writing the credentials file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the credentials file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("writing the credentials file: %w", err)
	}
	return nil
}
