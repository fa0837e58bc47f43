// Package vault opens and creates lifeboat vaults and gives the engines
// their primitives: sealed metadata objects, the chunk index, packing and
// uploading blobs, reading chunks back, sessions and prune plans
// (docs/format.md).
package vault

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/zeebo/blake3"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
)

// FormatVersion is the newest vault format this code reads. Version 2
// binds index objects, pack headers, prune plans and copy markers to the
// vault's ID; version 1 vaults are read and written as they are, unbound
// (docs/format.md, "Binding objects to their vault"). Version 3 is a
// version 2 vault that was rekeyed: objects sealed with a data key after
// the first name its generation (docs/format.md, "Data key generations").
const FormatVersion = 3

// initVersion is the version Init writes: a vault becomes version 3 only
// when rekeyed, so that older lifeboat keeps using vaults that never were.
const initVersion = 2

// rekeyedVersion is the version of a vault with more than one data key.
const rekeyedVersion = 3

// firstBound is the first format version whose objects are bound to the vault.
const firstBound = 2

// Sentinel errors callers map to messages and exit codes.
var (
	ErrNoVault       = errors.New("no vault at this location")
	ErrVaultExists   = errors.New("a vault already exists at this location")
	ErrNewerFormat   = errors.New("vault format is newer than this lifeboat understands")
	ErrConfigChanged = errors.New("vault config does not match its key slot (tampered or mixed up)")
)

// Config is the vault's config object.
type Config struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	ChunkSize   int       `json:"chunk_size"`
	PackSize    int       `json:"pack_size"`
	Compression string    `json:"compression"`
	// Origin is, in a copy (vault init --copy-of), the ID of the vault it
	// copies: pack headers bound to it are accepted as the copy's own.
	Origin string `json:"origin,omitempty"`
	// KeyGeneration is, in a rekeyed vault (version 3), the newest data
	// key generation: a key slot that does not hold it opens stale.
	KeyGeneration uint16 `json:"key_generation,omitempty"`
	// Lock, if set, has every object a point needs stored under an S3
	// Object Lock retention (vault init --lock; lock.go).
	Lock *Lock `json:"lock,omitempty"`
}

// Bound reports whether the vault's objects are bound to its ID (format
// version 2 and later).
func (c Config) Bound() bool { return c.Version >= firstBound }

// Compression settings a vault may name.
var compressionLevels = map[string]chunk.Level{
	"zstd-fastest": chunk.LevelFastest,
	"zstd":         chunk.LevelDefault,
	"zstd-better":  chunk.LevelBetter,
}

// Defaults, chosen from bench/RESULTS.md.
const (
	DefaultChunkSize   = 256 << 10
	DefaultPackSize    = 16 << 20
	DefaultCompression = "zstd-fastest"
	MinChunkSize       = 64 << 10
	MaxChunkSize       = 8 << 20
)

func (c *Config) validate() error {
	if c.Format != "lifeboat-vault" {
		return fmt.Errorf("config: format %q is not a lifeboat vault", c.Format)
	}
	if c.Version > FormatVersion {
		return fmt.Errorf("vault format version %d: %w (it reads up to %d): upgrade lifeboat", c.Version, ErrNewerFormat, FormatVersion)
	}
	if c.Version < 1 {
		return fmt.Errorf("config: invalid format version %d", c.Version)
	}
	// Only a rekey makes a version 3 vault, with a second data key at least.
	if (c.Version >= rekeyedVersion) != (c.KeyGeneration >= 2) || c.KeyGeneration == 1 {
		return fmt.Errorf("config: format version %d with key generation %d", c.Version, c.KeyGeneration)
	}
	if err := ValidChunkSize(c.ChunkSize); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.PackSize < 1<<20 || c.PackSize > 1<<30 {
		return fmt.Errorf("config: pack size %d outside 1 MiB..1 GiB", c.PackSize)
	}
	if _, ok := compressionLevels[c.Compression]; !ok {
		return fmt.Errorf("config: unknown compression %q", c.Compression)
	}
	if c.Lock != nil {
		if err := c.Lock.validate(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

// ValidChunkSize checks a chunk size is a power of two in range.
func ValidChunkSize(n int) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d must be a power of two from 64 KiB to 8 MiB", n)
	}
	return nil
}

type keyPayload struct {
	DataKey crypto.Key `json:"data_key"` // generation 1
	IDKey   crypto.Key `json:"id_key"`
	Config  Config     `json:"config"`
	// DataKeys are the data keys of generations 2 and later (vault rekey),
	// oldest first; the last one seals what is written.
	DataKeys []genKey `json:"data_keys,omitempty"`
}

// genKey is a data key of a generation after the first.
type genKey struct {
	Generation uint16     `json:"generation"`
	Key        crypto.Key `json:"key"`
}

// ring is the payload's data keys by generation.
func (p keyPayload) ring() map[uint16]crypto.Key {
	m := map[uint16]crypto.Key{1: p.DataKey}
	for _, k := range p.DataKeys {
		m[k.Generation] = k.Key
	}
	return m
}

// generation is the newest data key generation of the payload.
func (p keyPayload) generation() uint16 {
	if n := len(p.DataKeys); n > 0 {
		return p.DataKeys[n-1].Generation
	}
	return 1
}

// Vault is an open vault. Safe for concurrent use.
type Vault struct {
	store  blob.Store
	cfg    Config
	keys   keyPayload
	codec  *chunk.Codec
	clock  clock.Clock
	host   string
	kdf    crypto.KDFParams
	upload int // parallel uploads
	warn   func(string)
	slot   string // the key slot this vault was opened with
	// slotName labels it, passphrase opens it (kept to rewrite it when
	// rekeying), and newest is the newest data key generation any slot
	// claims to hold: above this slot's, writing is refused (stale).
	slotName   string
	passphrase []byte
	newest     uint16
	cfgBehind  bool // the stored config is behind the key slot's: rewrite it before writing
	keyBook    KeyBook
	// locked is the store of a vault with a Lock (lock.go), nil otherwise:
	// kept apart so that views through WithStore still extend locks.
	locked *lockedStore
	// noDelete is set once the store refused a delete (DeletesRefused);
	// shared by the views WithStore makes.
	noDelete *atomic.Bool
	cache    string // Options.CacheDir
}

// KeyBook is this host's record of the newest data key generation it used
// in each vault (internal/lastseen).
type KeyBook interface {
	KeyGeneration(vaultID string) (uint16, error)
	SawKeyGeneration(vaultID string, g uint16) error
}

// Options tune Init and Open.
type Options struct {
	ChunkSize   int              // Init only; 0 = DefaultChunkSize
	PackSize    int              // Init only; 0 = DefaultPackSize
	Compression string           // Init only; "" = DefaultCompression
	KDF         crypto.KDFParams // key slots written; zero = crypto.DefaultKDF
	Clock       clock.Clock      // nil = real time
	Uploads     int              // parallel uploads; 0 = 4
	// SoftDelete is the soft-delete window Init writes (a settings
	// object); 0 writes none, which leaves soft delete off, as in vaults
	// made before it existed.
	SoftDelete time.Duration
	// Lock, if set, is the object lock Init gives the vault; the store
	// must be an S3 bucket with Object Lock enabled.
	Lock *Lock
	// Version is the format version Init writes; 0 = 2 (a vault becomes 3
	// when rekeyed). Only tests ask for an older one, to check old vaults
	// stay readable.
	Version int
	// Keys, if set, remembers the newest data key generation this host
	// used in each vault: a key slot holding less (the config and an old
	// slot put back at the storage) opens stale, writing nothing.
	Keys KeyBook
	// CacheDir is the root of the local index cache (internal/indexcache:
	// one directory per vault ID under it); "" keeps no cache, loading
	// the whole index into memory for each run.
	CacheDir string
	// Warn, if set, receives notices that do not stop an operation: an
	// unreadable object a listing skipped, a key slot Open refused or found
	// damaged, a read session going on without its marker. It is called
	// one notice at a time.
	Warn func(string)
}

func (o *Options) fill() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.KDF == (crypto.KDFParams{}) {
		o.KDF = crypto.DefaultKDF
	}
	if o.Uploads == 0 {
		o.Uploads = 4
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	// One at a time: the vault warns from parallel loads.
	warn, mu := o.Warn, &sync.Mutex{}
	o.Warn = func(s string) {
		mu.Lock()
		defer mu.Unlock()
		warn(s)
	}
}

// Init creates a vault in an empty store.
func Init(ctx context.Context, store blob.Store, passphrase []byte, opts Options) (*Vault, error) {
	opts.fill()
	if err := checkEmpty(ctx, store); err != nil {
		return nil, err
	}
	cfg := Config{Format: "lifeboat-vault", Version: cmp.Or(opts.Version, initVersion), Created: opts.Clock.Now().UTC().Truncate(time.Second),
		ChunkSize: opts.ChunkSize, PackSize: opts.PackSize, Compression: opts.Compression, Lock: opts.Lock}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.PackSize == 0 {
		cfg.PackSize = DefaultPackSize
	}
	if cfg.Compression == "" {
		cfg.Compression = DefaultCompression
	}
	cfg.ID = randomName()
	var keys keyPayload
	var err error
	if keys.DataKey, err = crypto.NewRandomKey(); err != nil {
		return nil, err
	}
	if keys.IDKey, err = crypto.NewRandomKey(); err != nil {
		return nil, err
	}
	return create(ctx, store, passphrase, cfg, keys, opts)
}

// checkEmpty fails unless store holds no vault.
func checkEmpty(ctx context.Context, store blob.Store) error {
	if _, err := store.Stat(ctx, "config"); err == nil {
		return fmt.Errorf("%s: %w", store, ErrVaultExists)
	} else if !blob.IsNotExist(err) {
		return fmt.Errorf("checking %s for a vault: %w", store, err)
	}
	return nil
}

// create writes a new vault with cfg and keys into an empty store.
func create(ctx context.Context, store blob.Store, passphrase []byte, cfg Config, keys keyPayload, opts Options) (*Vault, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys.Config = cfg
	if cfg.Lock != nil {
		l, ok := store.(blob.Locker)
		if !ok {
			return nil, fmt.Errorf("%s: --lock needs an S3 bucket with Object Lock: %w", store, blob.ErrNoLock)
		}
		if err := l.CheckLock(ctx); err != nil {
			return nil, err
		}
	}
	v, err := newVault(store, cfg, keys, opts)
	if err != nil {
		return nil, err
	}
	// Key slot first, config last: a store with a config always has a key.
	if err := v.addSlot(ctx, DefaultKeyName, passphrase); err != nil {
		return nil, err
	}
	if opts.SoftDelete > 0 {
		if _, err := v.SaveSetting(ctx, opts.SoftDelete); err != nil {
			return nil, err
		}
	}
	cj, _ := json.MarshalIndent(cfg, "", "  ")
	if err := v.store.Put(ctx, "config", append(cj, '\n')); err != nil {
		return nil, fmt.Errorf("writing config: %w", err)
	}
	return v, nil
}

func newVault(store blob.Store, cfg Config, keys keyPayload, opts Options) (*Vault, error) {
	h := chunk.NewHasher(keys.IDKey)
	codec, err := chunk.NewCodec(keys.DataKey, h, compressionLevels[cfg.Compression], cfg.ChunkSize)
	if err != nil {
		return nil, err
	}
	if cfg.Bound() {
		codec.Bind(cfg.ID, cfg.Origin)
	}
	if len(keys.DataKeys) > 0 {
		ring, err := crypto.NewRing(keys.ring())
		if err != nil {
			return nil, fmt.Errorf("key slot payload: %w", err)
		}
		codec.UseRing(ring)
	}
	locked, err := withLock(store, cfg, opts.Clock.Now)
	if err != nil {
		return nil, err
	}
	if locked != nil {
		store = locked
	}
	host, _ := os.Hostname()
	return &Vault{store: store, locked: locked, cfg: cfg, keys: keys, codec: codec, clock: opts.Clock, host: host,
		kdf: opts.KDF, upload: opts.Uploads, warn: opts.Warn, newest: keys.generation(), keyBook: opts.Keys, noDelete: &atomic.Bool{}, cache: opts.CacheDir}, nil
}

// ReadConfig reads and checks the config without a passphrase.
func ReadConfig(ctx context.Context, store blob.Store) (Config, error) {
	var cfg Config
	data, err := store.Get(ctx, "config")
	if err != nil {
		if blob.IsNotExist(err) {
			return cfg, fmt.Errorf("%s: %w (run 'lifeboat vault init' to create one)", store, ErrNoVault)
		}
		return cfg, fmt.Errorf("reading vault config: %w", err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: config is not valid JSON: %w: %w", store, chunk.ErrCorrupt, err)
	}
	if err := cfg.validate(); err != nil {
		if !errors.Is(err, ErrNewerFormat) {
			err = fmt.Errorf("%w: %w", err, chunk.ErrCorrupt)
		}
		return cfg, fmt.Errorf("%s: %w", store, err)
	}
	return cfg, nil
}

// Open unlocks an existing vault.
func Open(ctx context.Context, store blob.Store, passphrase []byte, opts Options) (*Vault, error) {
	opts.fill()
	cfg, err := ReadConfig(ctx, store)
	if err != nil {
		return nil, err
	}
	var slots []string
	err = store.List(ctx, "keys/", func(i blob.Info) error { slots = append(slots, i.Name); return nil })
	if err != nil {
		return nil, fmt.Errorf("listing key slots: %w", err)
	}
	if len(slots) == 0 {
		return nil, fmt.Errorf("%s: no key slots under keys/: %w", store, chunk.ErrCorrupt)
	}
	// A damaged slot must not lock out a passphrase another slot opens.
	// Slots are tried cheapest first, and slots beyond the KDF maxima not
	// at all: a planted costly slot must not slow every open.
	var damaged []string
	type parsed struct {
		name string
		slot *crypto.Slot
	}
	var order []parsed
	for _, name := range slots {
		data, err := store.Get(ctx, name)
		if errors.Is(err, blob.ErrTooLarge) {
			damaged = append(damaged, fmt.Sprintf("key slot %s: %v", name, err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading key slot %s: %w", name, err)
		}
		slot, err := crypto.ParseSlot(data)
		if err != nil {
			damaged = append(damaged, fmt.Sprintf("key slot %s: %v", name, err))
			continue
		}
		order = append(order, parsed{name, slot})
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].slot.Cost() < order[j].slot.Cost() })
	newest := max(1, cfg.KeyGeneration)
	for _, sl := range order {
		newest = max(newest, sl.slot.Generation)
	}
	var found *Vault
	for _, sl := range order {
		name := sl.name
		// A slot this passphrase opened already holds every generation a
		// slot claims: the rest need not be derived. Otherwise one that
		// claims a newer generation may be this passphrase's rewritten
		// slot (a rekey cut short) and is worth trying.
		if found != nil && (found.keys.generation() >= newest || sl.slot.Generation <= found.keys.generation()) {
			continue
		}
		payload, err := sl.slot.Open(passphrase)
		if errors.Is(err, crypto.ErrWrongPassphrase) {
			continue
		}
		if err != nil {
			damaged = append(damaged, fmt.Sprintf("key slot %s: %v", name, err))
			continue
		}
		var keys keyPayload
		if err := json.Unmarshal(payload, &keys); err != nil {
			err = fmt.Errorf("key slot %s: payload: %w", name, err)
			if found == nil {
				return nil, err
			}
			damaged = append(damaged, err.Error())
			continue
		}
		if !sameConfig(keys.Config, cfg) {
			if found == nil {
				return nil, fmt.Errorf("%s: %w", store, ErrConfigChanged)
			}
			damaged = append(damaged, fmt.Sprintf("key slot %s: %v", name, ErrConfigChanged))
			continue
		}
		if found != nil && keys.generation() <= found.keys.generation() {
			continue
		}
		use, behind := cfg, aheadOf(keys.Config, cfg)
		if behind {
			use.Version, use.KeyGeneration = keys.Config.Version, keys.Config.KeyGeneration
		}
		v, err := newVault(store, use, keys, opts)
		if err != nil {
			return nil, err
		}
		v.cfgBehind = behind
		v.slot, v.slotName, v.passphrase = name, slotLabel(name, sl.slot), passphrase
		v.newest = max(newest, keys.generation())
		found = v
	}
	if found != nil {
		// What Open could do without: the caller is told, the vault opens.
		for _, d := range damaged {
			found.Warn(fmt.Sprintf("%s: %s", store, d))
		}
		found.checkKeyBook()
		if found.Stale() {
			found.Warn(fmt.Sprintf("%s: key slot %s holds data keys up to generation %d, but the vault was rekeyed to generation %d: "+
				"it reads what was written before, and cannot write (open the vault with a passphrase of a newer key slot)",
				store, found.slotName, found.keys.generation(), found.newest))
		}
		return found, nil
	}
	if len(damaged) > 0 {
		return nil, fmt.Errorf("%s: no key slot opens with this passphrase, and %s: %w", store, strings.Join(damaged, "; "), chunk.ErrCorrupt)
	}
	// A damaged slot fails its tag like a wrong passphrase: name the slots.
	return nil, fmt.Errorf("%s: %w: no key slot opens with it (tried %s)", store, crypto.ErrWrongPassphrase, strings.Join(slots, ", "))
}

// ChangePassphrase adds a key slot for the new passphrase, with the name of
// the slot the vault was opened with, then deletes that slot. No data is
// re-encrypted.
func (v *Vault) ChangePassphrase(ctx context.Context, newPassphrase []byte) error {
	if err := v.checkWritable(ctx); err != nil {
		return err
	}
	old := v.slot
	if err := v.addSlot(ctx, cmp.Or(v.slotName, DefaultKeyName), newPassphrase); err != nil {
		return err
	}
	if old != "" {
		if err := v.store.Delete(ctx, old); err != nil {
			return fmt.Errorf("new passphrase added, but removing the old key slot %s failed (both work): %w", old, err)
		}
	}
	return nil
}

func randomName() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Store is the underlying store.
func (v *Vault) Store() blob.Store { return v.store }

// Config returns the vault config.
func (v *Vault) Config() Config { return v.cfg }

// Codec returns the vault's codec.
func (v *Vault) Codec() *chunk.Codec { return v.codec }

// Clock returns the vault's clock.
func (v *Vault) Clock() clock.Clock { return v.clock }

// Host is this machine's host name, as recorded in points and sessions.
func (v *Vault) Host() string { return v.host }

// CacheDir is the root of the local index cache, "" for none.
func (v *Vault) CacheDir() string { return v.cache }

// CacheKey authenticates the local index cache (internal/indexcache): a
// key only holders of the vault's keys can derive, so that what a local
// attacker changes in the cache is detected, never trusted. It is derived
// from id_key, which chunk IDs depend on and which therefore never changes.
func (v *Vault) CacheKey() [32]byte {
	var k [32]byte
	blake3.DeriveKey("lifeboat index cache v1", v.keys.IDKey[:], k[:])
	return k
}

// Warn passes a notice that does not stop the operation to Options.Warn.
func (v *Vault) Warn(msg string) { v.warn(msg) }

// Workers is how many CPU-bound goroutines engines should run.
func Workers() int { return runtime.GOMAXPROCS(0) }

// Kinds of sealed metadata objects.
const (
	KindManifest  = "manifests"
	KindPoint     = "points"
	KindIndex     = "index"
	KindCondemned = "condemned"
	// KindDrill holds recovery drill results (docs/format.md, "Drill
	// results"), bound to the vault that proved the point.
	KindDrill = "drills"
	// KindCatalog: snapshots of a control plane's catalog (catalog.go).
	KindCatalog = "catalog"
)

// aad is the associated data of objects of kind. Manifests and points are
// bound to no vault: they are copied verbatim, so that a point has one ID
// at every site; prune plans are bound to the vault in version 2.
func (v *Vault) aad(kind string) string {
	switch kind {
	case KindManifest:
		return "lifeboat manifest v1"
	case KindPoint:
		return "lifeboat point v1"
	case KindDrill:
		return chunk.BindAAD("lifeboat drill", v.cfg.ID)
	}
	id := ""
	if v.cfg.Bound() {
		id = v.cfg.ID
	}
	if kind == KindSettings {
		return chunk.BindAAD("lifeboat settings", id)
	}
	if kind == KindCatalog {
		return chunk.BindAAD("lifeboat catalog", id)
	}
	return chunk.BindAAD("lifeboat condemned", id)
}

// ObjectName is the name of a content-addressed object of kind.
func ObjectName(kind string, id chunk.ID) string { return kind + "/" + id.String() }

// SaveObject seals plain as an object of kind and stores it under its hash.
func (v *Vault) SaveObject(ctx context.Context, kind string, plain []byte) (chunk.ID, error) {
	sealed := v.codec.SealObject(plain, v.aad(kind))
	id := chunk.ObjectID(sealed)
	if err := v.store.Put(ctx, ObjectName(kind, id), sealed); err != nil {
		return id, fmt.Errorf("writing %s: %w", ObjectName(kind, id), err)
	}
	return id, nil
}

// maxPlain bounds the plaintext of objects of a kind where nothing better
// is known; manifests are bounded by the disk their point records.
var maxPlain = map[string]uint64{KindPoint: 16 << 20, KindSettings: 1 << 16, KindDrill: 1 << 20, KindCatalog: MaxCatalogPlain}

// LoadObject reads, checks and opens an object of kind.
func (v *Vault) LoadObject(ctx context.Context, kind string, id chunk.ID) ([]byte, error) {
	return v.LoadObjectMax(ctx, kind, id, 0)
}

// LoadObjectMax is LoadObject refusing a plaintext of more than max bytes
// (0: the kind's own bound) before decompressing it all.
func (v *Vault) LoadObjectMax(ctx context.Context, kind string, id chunk.ID, max uint64) ([]byte, error) {
	_, plain, err := v.LoadObjectSealed(ctx, kind, id, max)
	return plain, err
}

// ListIDs lists the IDs of all objects of kind. Names that are not IDs are
// reported as an error naming them.
func (v *Vault) ListIDs(ctx context.Context, kind string) ([]chunk.ID, error) {
	ids, foreign, err := v.ScanIDs(ctx, kind)
	if err != nil {
		return nil, err
	}
	if len(foreign) > 0 {
		return nil, fmt.Errorf("listing %s: unexpected object %q: %w", kind, foreign[0], chunk.ErrCorrupt)
	}
	return ids, nil
}

// ScanIDs lists the IDs of all objects of kind, and apart the names under
// kind/ that are not IDs (a stray README, a planted file).
func (v *Vault) ScanIDs(ctx context.Context, kind string) (ids []chunk.ID, foreign []string, err error) {
	err = v.store.List(ctx, kind+"/", func(i blob.Info) error {
		base := i.Name[strings.LastIndex(i.Name, "/")+1:]
		id, err := chunk.ParseID(base)
		if err != nil || ObjectName(kind, id) != i.Name {
			foreign = append(foreign, i.Name)
			return nil
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	return ids, foreign, nil
}

// MinPassphrase is the fewest characters a new passphrase may have (at
// vault init, and when a key slot is added or a passphrase changed).
// Vaults whose passphrases are shorter, made before the rule, still open.
const MinPassphrase = 12

// ErrWeakPassphrase refuses a new passphrase shorter than MinPassphrase.
var ErrWeakPassphrase = errors.New("passphrase too short")

// CheckNewPassphrase refuses a passphrase too short to be a new one. Its
// key slot's Argon2id slows each guess, but a short passphrase is still
// guessed in reach of whoever copies the slot off the storage.
func CheckNewPassphrase(p []byte) error {
	if n := utf8.RuneCount(p); n < MinPassphrase {
		return fmt.Errorf("%w: it has %d characters, a new passphrase needs at least %d (a few random words will do)", ErrWeakPassphrase, n, MinPassphrase)
	}
	return nil
}
