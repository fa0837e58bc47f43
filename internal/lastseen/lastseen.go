// Package lastseen remembers, on this host, the newest recovery point of
// each machine seen in each vault, so that points deleted behind its back
// are noticed: a vault rolled back to an older state, or whose newest
// points were removed, otherwise looks like one that never had them.
//
// The record is a small JSON file per vault in the state directory
// (LIFEBOAT_STATE_DIR; /var/lib/lifeboat for root; else
// $XDG_STATE_HOME/lifeboat or ~/.local/state/lifeboat). It only moves
// forward, except when this host forgets points itself.
package lastseen

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/recovery"
)

// Book is the record of one host, kept in a directory. A nil *Book records
// and checks nothing.
type Book struct {
	dir string
}

// Dir is the state directory for the environment getenv reads.
func Dir(getenv func(string) string) (string, error) {
	if d := getenv("LIFEBOAT_STATE_DIR"); d != "" {
		return d, nil
	}
	if os.Geteuid() == 0 {
		return "/var/lib/lifeboat", nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "lifeboat"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "lifeboat"), nil
	}
	return "", errors.New("no state directory: set LIFEBOAT_STATE_DIR or HOME")
}

// Open returns the book kept in dir (created when first written).
func Open(dir string) *Book { return &Book{dir: dir} }

// FromEnv opens the book in the state directory of the environment getenv
// reads (Dir); without one it returns nil, which records nothing, and an
// error saying that vanished points go unnoticed.
func FromEnv(getenv func(string) string) (*Book, error) {
	dir, err := Dir(getenv)
	if err != nil {
		return nil, fmt.Errorf("%w: vanished points are not detected", err)
	}
	return Open(dir), nil
}

// seen is the newest point of one machine recorded.
type seen struct {
	ID   chunk.ID  `json:"id"`
	Time time.Time `json:"time"`
	Seen time.Time `json:"seen"` // when this host recorded it
}

type record struct {
	Version  int              `json:"version"`
	Vault    string           `json:"vault"`
	Machines map[string]*seen `json:"machines"`
	// KeyGeneration is the newest data key generation this host used in
	// the vault (vault rekey): a key slot holding less is a rollback.
	KeyGeneration uint16 `json:"key_generation,omitempty"`
}

func (b *Book) path(vaultID string) string {
	return filepath.Join(b.dir, "vaults", vaultID+".json")
}

func (b *Book) load(vaultID string) (*record, error) {
	r := &record{Version: 1, Vault: vaultID, Machines: map[string]*seen{}}
	data, err := os.ReadFile(b.path(vaultID))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the record of points seen: %w", err)
	}
	if err := json.Unmarshal(data, r); err != nil || r.Machines == nil {
		return nil, fmt.Errorf("%s is not a record of points seen: %v", b.path(vaultID), err)
	}
	return r, nil
}

func (b *Book) save(r *record) error {
	p := b.path(r.Vault)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("recording the points seen: %w", err)
	}
	data, _ := json.MarshalIndent(r, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording the points seen: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("recording the points seen: %w", err)
	}
	return nil
}

// CheckPoints is Check for a vault whose points are all loaded. A nil book
// checks nothing.
func (b *Book) CheckPoints(vaultID string, points []*recovery.Point, now time.Time) []string {
	if b == nil {
		return nil
	}
	ids := make([]chunk.ID, len(points))
	for i, p := range points {
		ids[i] = p.ID
	}
	return b.Check(vaultID, ids, points, now)
}

// Check compares the vault's points (ids: every point it has now) with
// the record and returns a warning for every machine whose newest
// recorded point is gone. Then it records the newest of points (the
// points loaded, possibly fewer than ids) for each machine where they
// are newer than the record. A record that cannot be read or written is
// a warning too: this check never stops a command.
func (b *Book) Check(vaultID string, ids []chunk.ID, points []*recovery.Point, now time.Time) []string {
	if b == nil {
		return nil
	}
	r, err := b.load(vaultID)
	if err != nil {
		return []string{err.Error()}
	}
	have := make(map[chunk.ID]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	var warnings []string
	machines := make([]string, 0, len(r.Machines))
	for m := range r.Machines {
		machines = append(machines, m)
	}
	sort.Strings(machines)
	for _, m := range machines {
		s := r.Machines[m]
		if !have[s.ID] {
			warnings = append(warnings, fmt.Sprintf("point %s of machine %s (taken %s), seen in this vault by this host on %s, is gone, and this host did not forget it: "+
				"points may have been deleted or the vault rolled back (forget on this host records the change)",
				s.ID.Short(), m, s.Time.UTC().Format(time.RFC3339), s.Seen.UTC().Format(time.RFC3339)))
		}
	}
	if advance(r, points, now) {
		if err := b.save(r); err != nil {
			warnings = append(warnings, err.Error())
		}
	}
	return warnings
}

// advance records the newest of points per machine where newer than the
// record, and reports whether anything changed.
func advance(r *record, points []*recovery.Point, now time.Time) bool {
	changed := false
	for _, p := range points {
		s := r.Machines[p.Machine]
		if s != nil && !p.Time.After(s.Time) {
			continue
		}
		r.Machines[p.Machine] = &seen{ID: p.ID, Time: p.Time, Seen: now.UTC()}
		changed = true
	}
	return changed
}

// Saw records points this host just wrote or copied, where newer.
func (b *Book) Saw(vaultID string, points []*recovery.Point, now time.Time) error {
	if b == nil {
		return nil
	}
	r, err := b.load(vaultID)
	if err != nil {
		return err
	}
	if advance(r, points, now) {
		return b.save(r)
	}
	return nil
}

// Reset makes the record the newest of points, every point the vault
// keeps, after this host deleted some of them itself (forget).
func (b *Book) Reset(vaultID string, points []*recovery.Point, now time.Time) error {
	if b == nil {
		return nil
	}
	r, err := b.load(vaultID)
	if err != nil {
		r = &record{Version: 1, Vault: vaultID}
	}
	r.Machines = map[string]*seen{}
	advance(r, points, now)
	return b.save(r)
}

// KeyGeneration is the newest data key generation this host recorded for
// the vault (0: none). A nil book records none.
func (b *Book) KeyGeneration(vaultID string) (uint16, error) {
	if b == nil {
		return 0, nil
	}
	r, err := b.load(vaultID)
	if err != nil {
		return 0, err
	}
	return r.KeyGeneration, nil
}

// SawKeyGeneration records that this host used data key generation g in
// the vault, where newer than the record.
func (b *Book) SawKeyGeneration(vaultID string, g uint16) error {
	if b == nil {
		return nil
	}
	r, err := b.load(vaultID)
	if err != nil {
		return err
	}
	if g <= r.KeyGeneration {
		return nil
	}
	r.KeyGeneration = g
	return b.save(r)
}
