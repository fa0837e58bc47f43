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
	"time"

	"github.com/zeebo/blake3"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/clock"
	"lifeboat/internal/crypto"
)

// FormatVersion is the vault format this code writes and the newest it
// reads. Version 2 binds index objects, pack headers, prune plans and copy
// markers to the vault's ID; version 1 vaults are read and written as they
// are, unbound (docs/format.md, "Binding objects to their vault").
const FormatVersion = 2

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
	if err := ValidChunkSize(c.ChunkSize); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.PackSize < 1<<20 || c.PackSize > 1<<30 {
		return fmt.Errorf("config: pack size %d outside 1 MiB..1 GiB", c.PackSize)
	}
	if _, ok := compressionLevels[c.Compression]; !ok {
		return fmt.Errorf("config: unknown compression %q", c.Compression)
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
	DataKey crypto.Key `json:"data_key"`
	IDKey   crypto.Key `json:"id_key"`
	Config  Config     `json:"config"`
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
	cache  string // Options.CacheDir
}

// Options tune Init and Open.
type Options struct {
	ChunkSize   int              // Init only; 0 = DefaultChunkSize
	PackSize    int              // Init only; 0 = DefaultPackSize
	Compression string           // Init only; "" = DefaultCompression
	KDF         crypto.KDFParams // key slots written; zero = crypto.DefaultKDF
	Clock       clock.Clock      // nil = real time
	Uploads     int              // parallel uploads; 0 = 4
	// Version is the format version Init writes; 0 = FormatVersion. Only
	// tests ask for an older one, to check old vaults stay readable.
	Version int
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
	cfg := Config{Format: "lifeboat-vault", Version: cmp.Or(opts.Version, FormatVersion), Created: opts.Clock.Now().UTC().Truncate(time.Second),
		ChunkSize: opts.ChunkSize, PackSize: opts.PackSize, Compression: opts.Compression}
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
	v, err := newVault(store, cfg, keys, opts)
	if err != nil {
		return nil, err
	}
	// Key slot first, config last: a store with a config always has a key.
	if err := v.AddPassphrase(ctx, passphrase); err != nil {
		return nil, err
	}
	cj, _ := json.MarshalIndent(cfg, "", "  ")
	if err := store.Put(ctx, "config", append(cj, '\n')); err != nil {
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
	host, _ := os.Hostname()
	return &Vault{store: store, cfg: cfg, keys: keys, codec: codec, clock: opts.Clock, host: host,
		kdf: opts.KDF, upload: opts.Uploads, warn: opts.Warn, cache: opts.CacheDir}, nil
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
	for _, sl := range order {
		name := sl.name
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
			return nil, fmt.Errorf("key slot %s: payload: %w", name, err)
		}
		if !keys.Config.Created.Equal(cfg.Created) || keys.Config.ID != cfg.ID || keys.Config.ChunkSize != cfg.ChunkSize ||
			keys.Config.PackSize != cfg.PackSize || keys.Config.Compression != cfg.Compression || keys.Config.Version != cfg.Version ||
			keys.Config.Origin != cfg.Origin {
			return nil, fmt.Errorf("%s: %w", store, ErrConfigChanged)
		}
		v, err := newVault(store, cfg, keys, opts)
		if err != nil {
			return nil, err
		}
		v.slot = name
		// What Open could do without: the caller is told, the vault opens.
		for _, d := range damaged {
			v.Warn(fmt.Sprintf("%s: %s", store, d))
		}
		return v, nil
	}
	if len(damaged) > 0 {
		return nil, fmt.Errorf("%s: no key slot opens with this passphrase, and %s: %w", store, strings.Join(damaged, "; "), chunk.ErrCorrupt)
	}
	// A damaged slot fails its tag like a wrong passphrase: name the slots.
	return nil, fmt.Errorf("%s: %w: no key slot opens with it (tried %s)", store, crypto.ErrWrongPassphrase, strings.Join(slots, ", "))
}

// ChangePassphrase adds a key slot for the new passphrase, then deletes the
// slot the vault was opened with. No data is re-encrypted.
func (v *Vault) ChangePassphrase(ctx context.Context, newPassphrase []byte) error {
	old := v.slot
	if err := v.AddPassphrase(ctx, newPassphrase); err != nil {
		return err
	}
	if old != "" {
		if err := v.store.Delete(ctx, old); err != nil {
			return fmt.Errorf("new passphrase added, but removing the old key slot %s failed (both work): %w", old, err)
		}
	}
	return nil
}

// AddPassphrase writes a new key slot for passphrase.
func (v *Vault) AddPassphrase(ctx context.Context, passphrase []byte) error {
	payload, _ := json.Marshal(v.keys)
	slot, err := crypto.SealSlot(passphrase, payload, v.kdf, v.clock.Now())
	if err != nil {
		return fmt.Errorf("creating key slot: %w", err)
	}
	name := "keys/" + randomName()
	if err := v.store.Put(ctx, name, slot); err != nil {
		return fmt.Errorf("writing key slot: %w", err)
	}
	v.slot = name
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
	}
	id := ""
	if v.cfg.Bound() {
		id = v.cfg.ID
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
var maxPlain = map[string]uint64{KindPoint: 16 << 20}

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
