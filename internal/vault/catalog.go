package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// Catalog snapshots (docs/format.md, "Control-plane catalog snapshots"):
// a lifeboat server saves what it was told to protect into its vault, so
// that losing the server never means losing more than its job history.
// The vault treats the document as opaque JSON; internal/catalog owns
// its content.

// MaxCatalogPlain bounds a snapshot object's plaintext (the envelope and
// the document it carries).
const MaxCatalogPlain = 48 << 20

// CatalogSnapshot is one snapshot as read back.
type CatalogSnapshot struct {
	ID      chunk.ID        `json:"-"`
	Version int             `json:"version"`
	Created time.Time       `json:"created"`
	Host    string          `json:"host"`
	Doc     json.RawMessage `json:"catalog"`
}

// catalogVersion is the envelope's version.
const catalogVersion = 1

// ParseCatalogSnapshot reads the plaintext of a catalog snapshot object,
// refusing anything but a version 1 envelope with a creation time and a
// JSON object as its document.
func ParseCatalogSnapshot(plain []byte) (CatalogSnapshot, error) {
	var s CatalogSnapshot
	if len(plain) > MaxCatalogPlain {
		return s, fmt.Errorf("catalog snapshot of %d bytes, more than %d: %w", len(plain), MaxCatalogPlain, chunk.ErrCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("catalog snapshot: %v: %w", err, chunk.ErrCorrupt)
	}
	if dec.More() {
		return s, fmt.Errorf("catalog snapshot: data after the document: %w", chunk.ErrCorrupt)
	}
	switch {
	case s.Version != catalogVersion:
		return s, fmt.Errorf("catalog snapshot version %d: this lifeboat reads version %d", s.Version, catalogVersion)
	case s.Created.IsZero():
		return s, fmt.Errorf("catalog snapshot without a creation time: %w", chunk.ErrCorrupt)
	case len(s.Doc) == 0 || s.Doc[0] != '{':
		return s, fmt.Errorf("catalog snapshot without a catalog document: %w", chunk.ErrCorrupt)
	}
	return s, nil
}

// SaveCatalog stores doc (a JSON object) as a new catalog snapshot,
// sealed and bound to this vault, and returns its ID.
func (v *Vault) SaveCatalog(ctx context.Context, doc json.RawMessage) (chunk.ID, error) {
	plain, err := json.Marshal(CatalogSnapshot{Version: catalogVersion, Created: v.clock.Now().UTC(), Host: v.host, Doc: doc})
	if err != nil {
		return chunk.ID{}, fmt.Errorf("catalog snapshot: %w", err)
	}
	if _, err := ParseCatalogSnapshot(plain); err != nil {
		return chunk.ID{}, err // what would not be read back is not written
	}
	return v.SaveObject(ctx, KindCatalog, plain)
}

// ErrNoCatalog: the vault holds no readable catalog snapshot.
var ErrNoCatalog = errors.New("no catalog snapshot in the vault")

// CatalogSnapshots reads every catalog snapshot, newest first. Objects
// that cannot be read or opened (damaged, planted, of another vault) are
// skipped with a warning naming them.
func (v *Vault) CatalogSnapshots(ctx context.Context) ([]CatalogSnapshot, error) {
	ids, foreign, err := v.ScanIDs(ctx, KindCatalog)
	if err != nil {
		return nil, err
	}
	for _, name := range foreign {
		v.warn(fmt.Sprintf("ignoring %s: not a catalog snapshot's name", name))
	}
	var out []CatalogSnapshot
	for _, id := range ids {
		plain, err := v.LoadObject(ctx, KindCatalog, id)
		if err == nil {
			var s CatalogSnapshot
			if s, err = ParseCatalogSnapshot(plain); err == nil {
				s.ID = id
				out = append(out, s)
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, chunk.ErrCorrupt) && !blob.IsNotExist(err) {
			return nil, err
		}
		v.warn(fmt.Sprintf("ignoring catalog snapshot %s: %v", ObjectName(KindCatalog, id), err))
	}
	slices.SortFunc(out, func(a, b CatalogSnapshot) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// LatestCatalog returns the newest readable catalog snapshot, or
// ErrNoCatalog.
func (v *Vault) LatestCatalog(ctx context.Context) (CatalogSnapshot, error) {
	all, err := v.CatalogSnapshots(ctx)
	if err != nil {
		return CatalogSnapshot{}, err
	}
	if len(all) == 0 {
		return CatalogSnapshot{}, ErrNoCatalog
	}
	return all[0], nil
}

// TrimCatalogs deletes all but the newest keep snapshots (at least one is
// always kept).
func (v *Vault) TrimCatalogs(ctx context.Context, keep int) error {
	all, err := v.CatalogSnapshots(ctx)
	if err != nil {
		return err
	}
	for _, s := range all[min(max(keep, 1), len(all)):] {
		if err := v.store.Delete(ctx, ObjectName(KindCatalog, s.ID)); err != nil && !blob.IsNotExist(err) {
			return fmt.Errorf("deleting an old catalog snapshot: %w", err)
		}
	}
	return nil
}
