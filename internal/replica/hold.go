package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A hold keeps one recovery point's disks readable on the site's host for
// a reader in another process — replicate copy, which copies the point
// into a vault: qcow2 overlays over the newest checkpoint at or before
// the point (or the base images) with the journal's batches after it up
// to the point written into them, in failover/.hold-ID/. Like
// a failover's directory, its existence keeps the base from folding, so
// the overlays' backing does not change under the reader. A hold is
// released by its reader; the server removes those a crash left behind
// when it starts, and any older than HoldMaxAge (a reader that died
// without releasing its hold must not stop folding for good).

// HoldOptions say which point to hold.
type HoldOptions struct {
	// Point is "latest", "latest-app", a point ID or an RFC 3339 time.
	Point string `json:"point,omitempty"`
	// Since, when not 0, asks for the extents written after cut Since
	// of replica Replica (a previous copy's cut): the copy then reads only
	// those. They are left out when the replica is another one, or the
	// history since that cut is folded.
	Since   uint64 `json:"since,omitempty"`
	Replica string `json:"replica,omitempty"`
}

// HeldDisk is one disk of a held point.
type HeldDisk struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// File is the qcow2 overlay (on the site's host) holding the disk at
	// the point.
	File string `json:"file"`
	// Changed are the extents written after HoldOptions.Since (nil when
	// not known: read the whole disk).
	Changed []Extent `json:"changed,omitempty"`
}

// Extent is a byte range of a disk.
type Extent struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// Hold is a held point.
type Hold struct {
	ID      string `json:"id"`
	Machine string `json:"machine"`
	// Replica identifies this replica of the machine: a replica removed and
	// registered again has another, and its cut numbers start again.
	Replica    string          `json:"replica"`
	Point      Point           `json:"point"`
	Disks      []HeldDisk      `json:"disks"`
	Definition json.RawMessage `json:"definition,omitempty"` // as the source sent it, if it did
	// SinceKnown says Changed was computed (from HoldOptions.Since).
	SinceKnown bool `json:"since_known,omitempty"`
	// Checkpoint is the checkpoint the overlays were made over (0: the
	// base), Batches how many journal batches were written into them.
	Checkpoint uint64 `json:"checkpoint,omitempty"`
	Batches    int    `json:"batches"`
}

const holdPrefix = ".hold-"

// HoldMaxAge is how long a hold may last: a copy into a vault taking
// longer loses its hold (and fails reading its disks).
var HoldMaxAge = 24 * time.Hour

// Hold materialises a point of a machine as overlays on this host and
// keeps them (and the base under them) until Release.
func (s *Store) Hold(ctx context.Context, name string, opts HoldOptions) (*Hold, error) {
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	pt, err := Choose(m.points(s.clock), opts.Point)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	id := randomHex()
	dir := filepath.Join(m.dir, "failover", holdPrefix+id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("holding point %d of %s: %w", pt.ID, name, err)
	}
	h := &Hold{ID: id, Machine: name, Replica: m.id, Point: pt}
	from, batches := m.startFor(pt.ID)
	h.Checkpoint, h.Batches = from, len(batches)
	var since []string
	for _, c := range m.cuts {
		if c.Seq > opts.Since && c.Seq <= pt.ID {
			since = append(since, filepath.Join(m.dir, "journal", batchName(c.Seq)))
		}
	}
	// The journal holds every cut after the base: the changes since cut
	// Since are its batches after Since when the base is not past it.
	h.SinceKnown = opts.Since != 0 && opts.Replica == m.id && opts.Since >= m.base.Cut.Seq && opts.Since <= pt.ID
	disks := m.spec.Disks
	h.Definition = m.spec.Definition // none for a storage daemon: the backup records a minimal one
	m.mu.Unlock()

	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	source := func(d DiskSpec) (string, string) { return m.startSource(from, d.Name) }
	if err := writeOverlays(ctx, source, disks, batches, dir, 0); err != nil {
		return nil, fmt.Errorf("materialising point %d of %s: %w", pt.ID, name, err)
	}
	var changed [][]Extent
	if h.SinceKnown {
		if changed, err = changedExtents(since, len(disks)); err != nil {
			return nil, fmt.Errorf("reading the history of %s since cut %d: %w", name, opts.Since, err)
		}
	}
	for i, d := range disks {
		hd := HeldDisk{Name: d.Name, Size: d.Size, File: filepath.Join(dir, d.Name+".qcow2")}
		if h.SinceKnown {
			hd.Changed = changed[i]
			if hd.Changed == nil {
				hd.Changed = []Extent{}
			}
		}
		h.Disks = append(h.Disks, hd)
	}
	ok = true
	return h, nil
}

// Release removes a hold; the base may fold again once no hold or
// failover reads it.
func (s *Store) Release(ctx context.Context, name, id string) error {
	m, err := s.machine(name)
	if err != nil {
		return err
	}
	if id == "" || strings.ContainsAny(id, "/.") {
		return fmt.Errorf("%w: hold %q", ErrInvalid, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := filepath.Join(m.dir, "failover", holdPrefix+id)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s has no hold %s", ErrNotFound, name, id)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("releasing hold %s of %s: %w", id, name, err)
	}
	return nil
}

// changedExtents is, per disk, the union of the extents the batches
// write, sorted and merged.
func changedExtents(batches []string, disks int) ([][]Extent, error) {
	out := make([][]Extent, disks)
	for _, b := range batches {
		f, err := os.Open(b)
		if err != nil {
			return nil, err
		}
		_, recs, err := ReadBatch(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b, err)
		}
		for _, r := range recs {
			if r.Disk < disks {
				out[r.Disk] = append(out[r.Disk], Extent{Off: r.Off, Len: r.Len})
			}
		}
	}
	for i, xs := range out {
		out[i] = mergeExtents(xs)
	}
	return out, nil
}

// mergeExtents sorts extents and merges those that overlap or touch.
func mergeExtents(xs []Extent) []Extent {
	if len(xs) == 0 {
		return xs
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Off < xs[j].Off })
	out := xs[:1]
	for _, x := range xs[1:] {
		last := &out[len(out)-1]
		if x.Off <= last.Off+last.Len {
			last.Len = max(last.Len, x.Off+x.Len-last.Off)
			continue
		}
		out = append(out, x)
	}
	return out
}

// ExpireHolds removes the holds older than HoldMaxAge (by their
// directory's time), and returns how many it removed.
func (s *Store) ExpireHolds(ctx context.Context) (int, error) {
	s.mu.Lock()
	ms := make([]*machine, 0, len(s.machines))
	for _, m := range s.machines {
		ms = append(ms, m)
	}
	s.mu.Unlock()
	n := 0
	for _, m := range ms {
		m.mu.Lock()
		names, err := m.failovers()
		for _, name := range names {
			if !strings.HasPrefix(name, holdPrefix) {
				continue
			}
			dir := filepath.Join(m.dir, "failover", name)
			st, serr := os.Stat(dir)
			if serr != nil || s.clock.Now().Sub(st.ModTime()) < HoldMaxAge {
				continue
			}
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = errors.Join(err, rerr)
				continue
			}
			n++
		}
		m.mu.Unlock()
		if err != nil {
			return n, fmt.Errorf("expiring holds of %s: %w", m.spec.Machine, err)
		}
	}
	return n, nil
}

// removeStaleHolds removes the holds of a machine (a reader can hold a
// point only while the server that made the hold runs).
func (m *machine) removeStaleHolds() error {
	names, err := m.failovers()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, holdPrefix) {
			if err := os.RemoveAll(filepath.Join(m.dir, "failover", n)); err != nil {
				return err
			}
		}
	}
	return nil
}
