package vault

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/zeebo/blake3"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// InitCopyOf creates a vault in an empty store that shares src's data_key
// and id_key, chunk size and compression (docs/format.md, "Vault copies"):
// every object of src can then be copied into it byte for byte, and chunk,
// manifest and point IDs are the same in both. The new vault has its own ID,
// its own key slot under passphrase, and the pack size in opts (0: src's).
func InitCopyOf(ctx context.Context, store blob.Store, passphrase []byte, src *Vault, opts Options) (*Vault, error) {
	opts.fill()
	if err := checkEmpty(ctx, store); err != nil {
		return nil, err
	}
	cfg := src.cfg
	cfg.Version = cmp.Or(opts.Version, initVersion)
	if len(src.keys.DataKeys) > 0 {
		cfg.Version = rekeyedVersion
	}
	cfg.Origin = src.cfg.ID
	cfg.Created = opts.Clock.Now().UTC().Truncate(time.Second)
	cfg.ID = randomName()
	cfg.Lock = opts.Lock // the copy's own, not its source's
	if opts.PackSize != 0 {
		cfg.PackSize = opts.PackSize
	}
	return create(ctx, store, passphrase, cfg, keyPayload{DataKey: src.keys.DataKey, IDKey: src.keys.IDKey, DataKeys: src.keys.DataKeys}, opts)
}

// SameKeys reports whether v and o were made with the same first data key
// and name chunks with the same key, so that objects copied between them
// byte for byte stay valid once each holds the other's newer data keys
// (ImportKeys).
func (v *Vault) SameKeys(o *Vault) bool {
	d := subtle.ConstantTimeCompare(v.keys.DataKey[:], o.keys.DataKey[:])
	i := subtle.ConstantTimeCompare(v.keys.IDKey[:], o.keys.IDKey[:])
	return d&i == 1
}

// WithStore returns the vault v seen through store, which must hold the
// same objects (a wrapper around v.Store() that counts, throttles or
// injects faults). Both values stay usable.
func (v *Vault) WithStore(store blob.Store) *Vault {
	w := *v
	w.store = store
	return &w
}

// LoadObjectSealed is LoadObject that also returns the object as stored,
// for copying it to a vault with the same keys.
// A plaintext of more than max bytes (0: the kind's bound) is refused.
func (v *Vault) LoadObjectSealed(ctx context.Context, kind string, id chunk.ID, max uint64) (sealed, plain []byte, err error) {
	name := ObjectName(kind, id)
	sealed, err = v.store.Get(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", name, err)
	}
	plain, err = v.OpenSealed(kind, id, sealed, max)
	return sealed, plain, err
}

// OpenSealed checks that sealed, an object of kind as stored, hashes to id
// and opens it, refusing a plaintext of more than max bytes (0: the kind's
// bound).
func (v *Vault) OpenSealed(kind string, id chunk.ID, sealed []byte, max uint64) ([]byte, error) {
	name := ObjectName(kind, id)
	if chunk.ObjectID(sealed) != id {
		return nil, fmt.Errorf("%s: content does not match its name: %w", name, chunk.ErrCorrupt)
	}
	if max == 0 {
		max = maxPlain[kind]
	}
	plain, err := v.codec.OpenObjectMax(sealed, v.aad(kind), max)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return plain, nil
}

// MarkerPrefix names the objects that record, at a copy, which points it
// received (docs/format.md, "Vault copies").
const MarkerPrefix = "copied/"

// markerTag authenticates that the copy copyID received point: a keyed
// hash under a key derived from the data key, which the copy and its
// source share and the storage does not know.
func (v *Vault) markerTag(copyID string, point chunk.ID) string {
	var k [32]byte
	blake3.DeriveKey("lifeboat copied marker v2", v.keys.DataKey[:], k[:])
	h, _ := blake3.NewKeyed(k[:])
	h.WriteString(copyID)
	h.Write(point[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// CopyMarkerName is the name of the marker recording that the copy whose
// config is copyCfg received point. v is the copy or a vault sharing its
// keys (its source). In a version 1 copy the name is the point ID alone.
func (v *Vault) CopyMarkerName(copyCfg Config, point chunk.ID) string {
	if !copyCfg.Bound() {
		return MarkerPrefix + point.String()
	}
	return MarkerPrefix + point.String() + "-" + v.markerTag(copyCfg.ID, point)
}

// CopyMarkers lists the markers in store, the copy whose config is
// copyCfg, and returns the points they record with each marker's name.
// v is the copy or a vault sharing its keys. A marker whose name does not
// authenticate (planted, made for another copy, or of the unbound form in
// a bound copy) records nothing: it is named in bad, and its point is
// copied again.
func (v *Vault) CopyMarkers(ctx context.Context, store blob.Store, copyCfg Config) (marked map[chunk.ID]string, bad []string, err error) {
	marked = map[chunk.ID]string{}
	err = store.List(ctx, MarkerPrefix, func(i blob.Info) error {
		base := strings.TrimPrefix(i.Name, MarkerPrefix)
		id, perr := chunk.ParseID(base[:min(64, len(base))])
		if perr == nil && v.CopyMarkerName(copyCfg, id) == i.Name {
			marked[id] = i.Name
			return nil
		}
		bad = append(bad, fmt.Sprintf("%s: not a marker this copy wrote (planted, or for another vault): ignored, its point is copied again", i.Name))
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: listing %s: %w", store, MarkerPrefix, err)
	}
	return marked, bad, nil
}
