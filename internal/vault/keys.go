package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/crypto"
)

// DefaultKeyName names the key slot vault init writes.
const DefaultKeyName = "default"

// Errors of key management; callers map them to exit codes.
var (
	// ErrNoKey: no key slot has the name given.
	ErrNoKey = errors.New("no such key slot")
	// ErrKeyRefused: the key slot change asked for is refused (the last
	// slot, the slot in use without force, a name taken or invalid).
	ErrKeyRefused = errors.New("key slot change refused")
	// ErrStale: the key slot in use lacks the newest data key.
	ErrStale = errors.New("this key slot lacks the vault's newest data key")
)

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidKeyName checks a key slot name: 1 to 64 letters, digits, '.', '_',
// '@' or '-', starting with a letter or digit.
func ValidKeyName(name string) error {
	if !keyNameRE.MatchString(name) {
		return fmt.Errorf("key name %q: %w: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", name, ErrKeyRefused)
	}
	return nil
}

// sameConfig reports whether the config a key slot authenticates is the
// vault's config, but for the version and key generation, which a rekey
// moves forward: a slot made before a rekey (version 2, an older
// generation) stays valid after it, reading what it could read before
// (it opens stale); a slot ahead of the config (a rekey cut short after
// writing it, or a config put back from before the rekey) is trusted over
// the config, which is not authenticated (aheadOf).
func sameConfig(k, c Config) bool {
	versions := k.Version == c.Version || (k.Version >= initVersion && c.Version >= initVersion)
	return k.Created.Equal(c.Created) && k.ID == c.ID && k.ChunkSize == c.ChunkSize && k.PackSize == c.PackSize &&
		k.Compression == c.Compression && versions && k.Origin == c.Origin && sameLock(k.Lock, c.Lock)
}

// aheadOf reports whether the config a key slot authenticates is newer
// than the stored one.
func aheadOf(k, c Config) bool {
	return k.Version > c.Version || k.KeyGeneration > c.KeyGeneration
}

// slotLabel is a slot's name, or for a slot written before names existed
// one derived from its object name ("slot-" and 8 hex digits).
func slotLabel(object string, s *crypto.Slot) string {
	if s != nil && s.Name != "" {
		return s.Name
	}
	base := path.Base(object)
	return "slot-" + base[:min(8, len(base))]
}

// Stale reports whether a key slot claims a newer data key than the one
// this vault was opened with holds: what it wrote would be sealed with a
// key a removed passphrase may know, so it writes nothing.
func (v *Vault) Stale() bool { return v.newest > v.keys.generation() }

// checkWritable refuses to write through a stale key slot, and before the
// first write puts back a config that is behind the key slot (aheadOf),
// so that older lifeboat refuses a vault holding tagged objects.
func (v *Vault) checkWritable(ctx context.Context) error {
	if v.cfgBehind {
		if err := v.writeConfig(ctx); err != nil {
			return err
		}
		v.cfgBehind = false
	}
	if v.Stale() {
		return fmt.Errorf("%s: key slot %s holds data keys up to generation %d, the vault was rekeyed to %d: %w "+
			"(open it with a passphrase whose key slot was made or rewritten by the rekey)", v.store, v.slotName, v.keys.generation(), v.newest, ErrStale)
	}
	return nil
}

// checkKeyBook compares the key slot opened with this host's record: one
// holding less than this host used before makes the vault stale (the
// config and an old key slot were put back at the storage, and newer
// slots deleted); otherwise the record moves up to it.
func (v *Vault) checkKeyBook() {
	if v.keyBook == nil {
		return
	}
	seen, err := v.keyBook.KeyGeneration(v.cfg.ID)
	if err != nil {
		v.Warn(fmt.Sprintf("%s: %v: a rollback of the vault's keys goes unnoticed", v.store, err))
		return
	}
	if seen > v.keys.generation() {
		v.Warn(fmt.Sprintf("%s: this host used data key generation %d in this vault, but its key slots offer only %d: "+
			"the vault's keys may have been rolled back at the storage (an old config and key slot put back)", v.store, seen, v.keys.generation()))
		v.newest = max(v.newest, seen)
		return
	}
	v.sawGeneration()
}

// sawGeneration records the generation v seals with in the host's book.
func (v *Vault) sawGeneration() {
	if v.keyBook == nil || v.Stale() {
		return
	}
	if err := v.keyBook.SawKeyGeneration(v.cfg.ID, v.keys.generation()); err != nil {
		v.Warn(fmt.Sprintf("%s: %v", v.store, err))
	}
}

// Generation is the data key generation new objects are sealed with.
func (v *Vault) Generation() uint16 { return v.keys.generation() }

// KeyName is the name of the key slot the vault was opened with.
func (v *Vault) KeyName() string { return v.slotName }

// addSlot writes a new key slot named name for passphrase, wrapping every
// data key v holds, and makes it the slot in use.
func (v *Vault) addSlot(ctx context.Context, name string, passphrase []byte) error {
	payload, _ := json.Marshal(v.keys)
	slot, err := crypto.SealNamedSlot(passphrase, payload, v.kdf, v.clock.Now(), name, v.keys.generation())
	if err != nil {
		return fmt.Errorf("creating key slot: %w", err)
	}
	object := "keys/" + randomName()
	if err := v.store.Put(ctx, object, slot); err != nil {
		return fmt.Errorf("writing key slot %s: %w", name, err)
	}
	v.slot, v.slotName, v.passphrase = object, name, passphrase
	return nil
}

// KeyInfo describes a key slot (vault key list).
type KeyInfo struct {
	Name    string    `json:"name"`
	Object  string    `json:"object"`
	Created time.Time `json:"created"`
	// Generation is the newest data key the slot claims to wrap (1: the
	// vault's first); a slot below the vault's newest reads only what was
	// written before the rekey that made it.
	Generation uint16 `json:"generation"`
	InUse      bool   `json:"in_use"`
	// Named is false for a slot written before slots had names: Name is
	// then derived from its object name.
	Named     bool   `json:"named"`
	Time      uint32 `json:"kdf_time,omitempty"`
	MemoryKiB uint32 `json:"kdf_memory_kib,omitempty"`
	Damaged   string `json:"damaged,omitempty"`
}

// CreatedText is when the slot was made, as vault key list shows it: "-"
// for a slot that does not say.
func (k KeyInfo) CreatedText() string {
	if k.Created.IsZero() {
		return "-"
	}
	return k.Created.Format("2006-01-02 15:04:05")
}

// GenerationText is the slot's generation, or why it is damaged.
func (k KeyInfo) GenerationText() string {
	if k.Damaged != "" {
		return "damaged: " + k.Damaged
	}
	return fmt.Sprint(k.Generation)
}

// Keys lists the vault's key slots by name. A slot that does not parse is
// listed with what is wrong with it.
func (v *Vault) Keys(ctx context.Context) ([]KeyInfo, error) {
	var objects []string
	if err := v.store.List(ctx, "keys/", func(i blob.Info) error { objects = append(objects, i.Name); return nil }); err != nil {
		return nil, fmt.Errorf("listing key slots: %w", err)
	}
	var out []KeyInfo
	for _, o := range objects {
		k := KeyInfo{Object: o, InUse: o == v.slot}
		data, err := v.store.Get(ctx, o)
		if err != nil && !errors.Is(err, blob.ErrTooLarge) {
			return nil, fmt.Errorf("reading key slot %s: %w", o, err)
		}
		slot, perr := crypto.ParseSlot(data)
		if err != nil || perr != nil {
			k.Name, k.Damaged = slotLabel(o, nil), fmt.Sprint(errors.Join(err, perr))
			out = append(out, k)
			continue
		}
		k.Name, k.Named, k.Created = slotLabel(o, slot), slot.Name != "", slot.Created
		k.Generation, k.Time, k.MemoryKiB = max(1, slot.Generation), slot.Time, slot.MemoryKiB
		if k.InUse {
			k.Generation = v.keys.generation()
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Object < out[j].Object
	})
	return out, nil
}

// AddKey writes a key slot named name for passphrase, wrapping every data
// key this vault holds. The slot in use stays the one v was opened with.
func (v *Vault) AddKey(ctx context.Context, name string, passphrase []byte) error {
	if err := ValidKeyName(name); err != nil {
		return err
	}
	if err := v.checkWritable(ctx); err != nil {
		return err
	}
	keys, err := v.Keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Name == name {
			return fmt.Errorf("a key slot named %q exists (%s): %w: choose another name", name, k.Object, ErrKeyRefused)
		}
	}
	w := *v
	return w.addSlot(ctx, name, passphrase)
}

// RemoveKey deletes the key slots named name (or whose object is name). It
// refuses to remove the last slot, and the slot in use unless force. The
// removed passphrase no longer opens the vault; whoever kept a copy of its
// slot can still read what is sealed with the data keys it wraps, until
// Rekey seals what is written from then on with a key it never held.
func (v *Vault) RemoveKey(ctx context.Context, name string, force bool) ([]KeyInfo, error) {
	keys, err := v.Keys(ctx)
	if err != nil {
		return nil, err
	}
	var gone []KeyInfo
	inUse := false
	for _, k := range keys {
		if k.Name == name || k.Object == name || k.Object == "keys/"+name {
			gone = append(gone, k)
			inUse = inUse || k.InUse
		}
	}
	if len(gone) == 0 {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.Name
		}
		return nil, fmt.Errorf("%s: %q: %w (there are: %s)", v.store, name, ErrNoKey, strings.Join(names, ", "))
	}
	if len(gone) == len(keys) {
		return nil, fmt.Errorf("key slot %q is the vault's last: %w: add another with 'lifeboat vault key add' first, or nothing would open the vault", name, ErrKeyRefused)
	}
	if inUse && !force {
		return nil, fmt.Errorf("key slot %q is the one this passphrase opened: %w without --force", name, ErrKeyRefused)
	}
	for _, k := range gone {
		if err := v.store.Delete(ctx, k.Object); err != nil && !blob.IsNotExist(err) {
			return nil, fmt.Errorf("removing key slot %s (%s): %w", k.Name, k.Object, err)
		}
	}
	if inUse {
		v.slot = ""
	}
	return gone, nil
}

// RekeyResult says what Rekey did.
type RekeyResult struct {
	Generation uint16    `json:"generation"`
	Key        string    `json:"key"`
	Removed    []KeyInfo `json:"removed"`
}

// Rekey makes a new data key, generation one above the newest, that seals
// every object written from now on; the older keys stay wrapped in the
// slot so that what they sealed still reads. Only the slot in use can be
// given the new key (the others' passphrases are unknown here), so the
// other slots are removed, which needs force when there are any: add their
// passphrases again with AddKey. A version 2 vault becomes version 3.
//
// Order, for crashes: config (version 3: older lifeboat stops writing),
// then the rewritten slot, then the old slots are deleted. A crash leaves
// the old slot beside the new one; Open prefers the one with the newer
// key, and running Rekey again finishes.
func (v *Vault) Rekey(ctx context.Context, force bool) (*RekeyResult, error) {
	if !v.cfg.Bound() {
		return nil, fmt.Errorf("%s is a format version 1 vault: %w: rekeying needs version 2 (create a new vault, or a copy with 'vault init --copy-of')", v.store, ErrKeyRefused)
	}
	if err := v.checkWritable(ctx); err != nil {
		return nil, err
	}
	keys, err := v.Keys(ctx)
	if err != nil {
		return nil, err
	}
	var others []KeyInfo
	for _, k := range keys {
		if !k.InUse {
			others = append(others, k)
		}
	}
	if len(others) > 0 && !force {
		names := make([]string, len(others))
		for i, k := range others {
			names[i] = k.Name
		}
		return nil, fmt.Errorf("rekeying removes the other key slots (%s), whose passphrases cannot be given the new key here: %w without --force "+
			"(add them again afterwards with 'lifeboat vault key add')", strings.Join(names, ", "), ErrKeyRefused)
	}
	if v.keys.generation() == 0xffff {
		return nil, fmt.Errorf("%s: %w: no data key generation is left", v.store, ErrKeyRefused)
	}
	nk, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	keysNew := v.keys
	keysNew.DataKeys = append(append([]genKey(nil), v.keys.DataKeys...), genKey{Generation: v.keys.generation() + 1, Key: nk})
	if err := v.rewriteSlot(ctx, keysNew); err != nil {
		return nil, err
	}
	var removed []KeyInfo
	for _, k := range others {
		if err := v.store.Delete(ctx, k.Object); err != nil && !blob.IsNotExist(err) {
			return nil, fmt.Errorf("rekeyed to generation %d, but removing key slot %s (%s) failed: run vault rekey again: %w", v.Generation(), k.Name, k.Object, err)
		}
		removed = append(removed, k)
	}
	return &RekeyResult{Generation: v.Generation(), Key: v.slotName, Removed: removed}, nil
}

// rewriteSlot makes keys, which wrap more data keys than v's, the vault's
// keys: the config goes to version 3, a slot with v's name and passphrase
// wraps keys, and the slot v was opened with is deleted.
func (v *Vault) rewriteSlot(ctx context.Context, keys keyPayload) error {
	if v.passphrase == nil {
		return fmt.Errorf("%s: %w: the vault was not opened with a passphrase", v.store, ErrKeyRefused)
	}
	cfg := v.cfg
	cfg.Version = rekeyedVersion
	cfg.KeyGeneration = keys.generation()
	keys.Config = cfg
	nv, err := newVault(v.store, cfg, keys, Options{Clock: v.clock, KDF: v.kdf, Uploads: v.upload, Warn: v.warn})
	if err != nil {
		return err
	}
	old, name := v.slot, v.slotName
	if err := nv.addSlot(ctx, name, v.passphrase); err != nil {
		return err
	}
	if err := nv.writeConfig(ctx); err != nil {
		return fmt.Errorf("new key slot %s written (it opens the vault): %w", nv.slot, err)
	}
	if old != "" {
		if err := v.store.Delete(ctx, old); err != nil && !blob.IsNotExist(err) {
			return fmt.Errorf("new key slot %s written, but removing its old slot %s failed: %w", nv.slot, old, err)
		}
	}
	nv.newest = max(v.newest, keys.generation())
	nv.keyBook = v.keyBook
	*v = *nv
	v.sawGeneration()
	return nil
}

// ImportKeys gives v the data keys of from, a vault sharing its keys (its
// source or its copy), that v lacks, so that objects from sealed with them
// can be copied to v and read there; new objects of v are then sealed
// with from's newest key. Only the slot in use is rewritten: v's other
// slots keep reading what they could, and cannot write (Stale).
func (v *Vault) ImportKeys(ctx context.Context, from *Vault) (bool, error) {
	if from.keys.generation() <= v.keys.generation() {
		return false, nil
	}
	if !v.cfg.Bound() {
		return false, fmt.Errorf("%s is a format version 1 copy and %s was rekeyed: %w: create the copy anew with 'vault init --copy-of'", v.store, from.store, ErrKeyRefused)
	}
	mine := v.keys.ring()
	for g, k := range from.keys.ring() {
		if m, ok := mine[g]; ok && m != k {
			return false, fmt.Errorf("%s and %s hold different data keys of generation %d: %w", v.store, from.store, g, ErrKeyRefused)
		}
	}
	keys := v.keys
	keys.DataKeys = append([]genKey(nil), from.keys.DataKeys...)
	if err := v.rewriteSlot(ctx, keys); err != nil {
		return false, fmt.Errorf("%s: taking the newer data keys of %s: %w", v.store, from.store, err)
	}
	return true, nil
}

// writeConfig stores v's config.
func (v *Vault) writeConfig(ctx context.Context) error {
	cj, _ := json.MarshalIndent(v.cfg, "", "  ")
	if err := v.store.Put(ctx, "config", append(cj, '\n')); err != nil {
		return fmt.Errorf("writing config (version %d): %w", v.cfg.Version, err)
	}
	return nil
}
