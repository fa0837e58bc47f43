package vault_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/crypto"
	"lifeboat/internal/vault"
)

// TestOldVaultsOpenAndKeysGetDerivedNames: vaults of format versions 1
// and 2 open, their unnamed key slots (written before names) are listed
// as slot-<8 hex>, and a version 1 vault is not rekeyed.
func TestOldVaultsOpenAndKeysGetDerivedNames(t *testing.T) {
	ctx := context.Background()
	for _, version := range []int{1, 2} {
		dir := t.TempDir()
		store, _ := blob.NewDir(dir)
		opts := cheap
		opts.Version = version
		v, err := vault.Init(ctx, store, []byte("pw"), opts)
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.SaveObject(ctx, vault.KindPoint, []byte("old point"))
		if err != nil {
			t.Fatal(err)
		}
		// Strip the name, as slots written before names have none.
		keys, _ := v.Keys(ctx)
		path := filepath.Join(dir, keys[0].Object)
		var slot map[string]any
		data, _ := os.ReadFile(path)
		json.Unmarshal(data, &slot)
		delete(slot, "name")
		data, _ = json.Marshal(slot)
		os.WriteFile(path, data, 0o600)

		v, err = vault.Open(ctx, store, []byte("pw"), cheap)
		if err != nil {
			t.Fatalf("version %d: %v", version, err)
		}
		keys, err = v.Keys(ctx)
		want := "slot-" + filepath.Base(keys[0].Object)[:8]
		if err != nil || len(keys) != 1 || keys[0].Name != want || keys[0].Named || !keys[0].InUse || v.KeyName() != want {
			t.Fatalf("version %d: keys %+v, %v; want one unnamed slot %s in use", version, keys, err, want)
		}
		if plain, err := v.LoadObject(ctx, vault.KindPoint, id); err != nil || string(plain) != "old point" {
			t.Fatalf("version %d: %q, %v", version, plain, err)
		}
		_, err = v.Rekey(ctx, false)
		if version == 1 && !errors.Is(err, vault.ErrKeyRefused) {
			t.Fatalf("version 1 vault rekeyed: %v", err)
		}
		if version == 2 {
			if err != nil {
				t.Fatal(err)
			}
			if keys, _ := v.Keys(ctx); len(keys) != 1 || keys[0].Name != want || keys[0].Generation != 2 {
				t.Fatalf("after rekey the slot keeps its derived name: %+v", keys)
			}
		}
	}
}

// TestRekeyCutShort: a rekey that wrote its new slot but died before
// writing the config and deleting the old slot leaves two slots of one
// passphrase and a version 2 config; Open takes the slot holding the new
// key, so nothing is written with the old one, and the first write puts
// the config forward (older lifeboat then refuses the vault).
func TestRekeyCutShort(t *testing.T) {
	ctx := context.Background()
	dir, store, v := dirVault(t)
	keys, _ := v.Keys(ctx)
	old := filepath.Join(dir, keys[0].Object)
	kept, _ := os.ReadFile(old)
	oldConfig, _ := os.ReadFile(filepath.Join(dir, "config"))
	if _, err := v.Rekey(ctx, false); err != nil {
		t.Fatal(err)
	}
	id, err := v.SaveObject(ctx, vault.KindPoint, []byte("new point"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(old, kept, 0o600) // the old slot back, as if never deleted
	os.WriteFile(filepath.Join(dir, "config"), oldConfig, 0o600)
	for i := 0; i < 3; i++ {
		w, err := vault.Open(ctx, store, []byte("pw"), cheap)
		if err != nil {
			t.Fatal(err)
		}
		if w.Stale() || w.Generation() != 2 {
			t.Fatalf("opened the old slot: generation %d, stale %v", w.Generation(), w.Stale())
		}
		if _, err := w.LoadObject(ctx, vault.KindPoint, id); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := vault.Open(ctx, store, []byte("pw"), cheap)
	sess, err := w.StartSession(ctx, "backup")
	if err != nil {
		t.Fatal(err)
	}
	sess.End(ctx)
	if cfg, err := vault.ReadConfig(ctx, store); err != nil || cfg.Version != 3 || cfg.KeyGeneration != 2 {
		t.Fatalf("config after the first write: %+v, %v", cfg, err)
	}
}

// TestRemovedSlotCannotReadNewData: the holder of a removed slot's copy,
// with the storage, opens the vault (stale), reads an index object and a
// pack header from before the rekey, and neither from after; it cannot
// start a writing session.
func TestRemovedSlotCannotReadNewData(t *testing.T) {
	ctx := context.Background()
	dir, store, v := dirVault(t)
	if err := v.AddKey(ctx, "mallory", []byte("mallory's passphrase")); err != nil {
		t.Fatal(err)
	}
	keys, _ := v.Keys(ctx)
	var mallory string
	for _, k := range keys {
		if k.Name == "mallory" {
			mallory = k.Object
		}
	}
	kept, _ := os.ReadFile(filepath.Join(dir, mallory))
	write := func() (chunk.ID, vault.PackInfo) {
		t.Helper()
		sess, err := v.StartSession(ctx, "backup")
		if err != nil {
			t.Fatal(err)
		}
		defer sess.End(ctx)
		ix := chunk.NewIndex()
		before, _ := v.ListPacks(ctx)
		p := v.NewPacker(ctx, ix, sess)
		block := make([]byte, 4096)
		copy(block, mallory+string(rune(len(before))))
		cid := v.Codec().Hasher().Sum(block)
		sealed, _ := v.Codec().EncodeBlob(nil, cid, block, nil)
		if err := p.Add(cid, sealed, len(block)); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		after, _ := v.ListPacks(ctx)
		for _, pi := range after {
			found := false
			for _, b := range before {
				found = found || b.ID == pi.ID
			}
			if !found {
				return cid, pi
			}
		}
		t.Fatal("no new pack")
		return cid, vault.PackInfo{}
	}
	oldChunk, oldPack := write()
	if _, err := v.RemoveKey(ctx, "mallory", false); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Open(ctx, store, []byte("mallory's passphrase"), cheap); !errors.Is(err, crypto.ErrWrongPassphrase) {
		t.Fatalf("removed passphrase: %v", err)
	}
	if _, err := v.Rekey(ctx, false); err != nil {
		t.Fatal(err)
	}
	newChunk, newPack := write()
	os.WriteFile(filepath.Join(dir, mallory), kept, 0o600)
	m, err := vault.Open(ctx, store, []byte("mallory's passphrase"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Stale() {
		t.Fatal("the kept slot is not stale")
	}
	if _, err := m.ReadPackHeader(ctx, oldPack.ID, oldPack.Size); err != nil {
		t.Fatalf("old pack with the kept slot: %v", err)
	}
	if _, err := m.ReadPackHeader(ctx, newPack.ID, newPack.Size); !errors.Is(err, crypto.ErrUnknownKey) {
		t.Fatalf("new pack with the kept slot: %v, want %v", err, crypto.ErrUnknownKey)
	}
	// The index object written after the rekey is skipped, unreadable.
	if ix, err := m.LoadIndex(ctx, nil); err != nil || !ix.Has(oldChunk) || ix.Has(newChunk) {
		t.Fatalf("index with the kept slot: %v; old chunk found %v, new chunk found %v", err, err == nil && ix.Has(oldChunk), err == nil && ix.Has(newChunk))
	}
	if _, err := m.StartSession(ctx, "backup"); !errors.Is(err, vault.ErrStale) {
		t.Fatalf("writing session with the kept slot: %v", err)
	}
}

func TestKeyInfoText(t *testing.T) {
	created := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		k            vault.KeyInfo
		created, gen string
	}{
		{vault.KeyInfo{Generation: 2, Created: created}, "2026-12-01 10:30:00", "2"},
		{vault.KeyInfo{Generation: 1}, "-", "1"},
		{vault.KeyInfo{Generation: 1, Damaged: "bad MAC"}, "-", "damaged: bad MAC"},
	} {
		if c.k.CreatedText() != c.created || c.k.GenerationText() != c.gen {
			t.Errorf("%+v: %q %q", c.k, c.k.CreatedText(), c.k.GenerationText())
		}
	}
}
