package vault_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
	"lifeboat/internal/testenv"
	"lifeboat/internal/vault"
)

var cheap = vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}

// dirVault creates a vault on a real directory.
func dirVault(t *testing.T) (string, blob.Store, *vault.Vault) {
	t.Helper()
	dir := t.TempDir()
	store, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Init(context.Background(), store, []byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	return dir, store, v
}

// plantSlot writes a key slot no passphrase opens, with the given KDF
// cost, as an attacker with write access to the storage could.
func plantSlot(t *testing.T, dir, name string, p crypto.KDFParams) {
	t.Helper()
	salt, sealed := make([]byte, 16), make([]byte, 80)
	rand.Read(salt)
	rand.Read(sealed)
	data, _ := json.Marshal(crypto.Slot{Version: 1, Created: time.Now().UTC(), KDF: "argon2id", KDFParams: p, Salt: salt, Sealed: sealed})
	if err := os.WriteFile(filepath.Join(dir, "keys", name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOpenTriesCheapSlotsFirst: a planted slot of 256 MiB memory cost,
// listed before the real one, is not derived when the real, cheaper slot
// opens with the passphrase.
func TestOpenTriesCheapSlotsFirst(t *testing.T) {
	ctx := context.Background()
	dir, store, _ := dirVault(t)
	plantSlot(t, dir, "00000000000000000000000000000000", crypto.KDFParams{Time: 1, MemoryKiB: 256 << 10, Threads: 1})
	var err error
	n := testenv.Allocated(func() { _, err = vault.Open(ctx, store, []byte("pw"), cheap) })
	if err != nil {
		t.Fatal(err)
	}
	if n > 64<<20 {
		t.Fatalf("open allocated %d MiB: the costly planted slot was tried before the cheap one", n>>20)
	}
}

// TestOpenRefusesCostlySlot: a slot whose KDF would take 4 GiB is never
// derived: a wrong passphrase fails naming it, the right one opens the
// vault with a warning naming it.
func TestOpenRefusesCostlySlot(t *testing.T) {
	ctx := context.Background()
	dir, store, _ := dirVault(t)
	planted := "0000000000000000000000000000beef"
	plantSlot(t, dir, planted, crypto.KDFParams{Time: 4, MemoryKiB: 4 << 20, Threads: 4})
	var err error
	n := testenv.Allocated(func() { _, err = vault.Open(ctx, store, []byte("wrong"), cheap) })
	if err == nil || !strings.Contains(err.Error(), "keys/"+planted) || !strings.Contains(err.Error(), "beyond the maxima") {
		t.Fatalf("wrong passphrase: %v, want an error naming the refused slot", err)
	}
	if n > 64<<20 {
		t.Fatalf("open allocated %d MiB for a slot it should refuse unread", n>>20)
	}
	var warnings []string
	opts := cheap
	opts.Warn = func(s string) { warnings = append(warnings, s) }
	if _, err := vault.Open(ctx, store, []byte("pw"), opts); err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(warnings, "\n"); !strings.Contains(w, "keys/"+planted) {
		t.Fatalf("warnings %q do not name the refused slot", warnings)
	}
}
