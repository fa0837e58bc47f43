// Package replica is the target side of continuous replication: it
// receives each protected machine's batches of writes (one per consistent
// cut at the source), keeps them durably as a journal over a base image
// per disk, chooses recovery points among the cuts, folds history older
// than the retention into the base, and materialises any point's disks for
// a failover. The on-disk format and its crash rules are in
// docs/replication.md.
//
// A batch is acknowledged only once its file is complete, checked, fsynced
// and renamed into the journal and the journal directory is fsynced: a
// target killed at any instant keeps every acknowledged cut, and a batch
// cut short is a temporary file, removed on start, that the source sends
// again.
package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"lifeboat/internal/clock"
	"lifeboat/internal/nbd"
	"lifeboat/internal/recovery"
)

// Errors callers tell apart (the HTTP layer maps them to statuses).
var (
	ErrInvalid  = errors.New("invalid replication request")
	ErrNotFound = errors.New("no such replicated machine")
	// ErrOutOfOrder: a batch's sequence number is not the next one.
	ErrOutOfOrder = errors.New("batch out of order")
	// ErrFailedOver: the machine is failed over; the replica takes no
	// more batches until the failover is cleaned up.
	ErrFailedOver = errors.New("machine is failed over")
)

// DiskSpec is one replicated disk.
type DiskSpec struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Spec is what the source registers for a machine.
type Spec struct {
	Machine    string          `json:"machine"`
	Definition json.RawMessage `json:"definition,omitempty"`
	Disks      []DiskSpec      `json:"disks"`
	Policy     Policy          `json:"policy"`
	// Seed, for a machine new to the site, names for some disks an image
	// on the site's host (under the server's seed directory) to start the
	// replica from: re-protecting a failed-over machine back to its old
	// site, whose old disks hold most of its data. The first sync then
	// sends only the blocks whose hashes differ.
	Seed map[string]string `json:"seed,omitempty"`
	// Group is the replication group the machine belongs to ("" for none).
	Group string `json:"group,omitempty"`
}

// Validate checks a spec.
func (s Spec) Validate() error {
	if err := recovery.ValidName("machine", s.Machine); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(s.Disks) == 0 {
		return fmt.Errorf("%w: machine %s has no disks", ErrInvalid, s.Machine)
	}
	seen := map[string]bool{}
	for _, d := range s.Disks {
		if err := recovery.ValidName("disk", d.Name); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if seen[d.Name] {
			return fmt.Errorf("%w: disk %s given twice", ErrInvalid, d.Name)
		}
		seen[d.Name] = true
		if d.Size <= 0 {
			return fmt.Errorf("%w: disk %s has size %d", ErrInvalid, d.Name, d.Size)
		}
	}
	if len(s.Definition) > 0 && !json.Valid(s.Definition) {
		return fmt.Errorf("%w: definition is not JSON", ErrInvalid)
	}
	return nil
}

// Store is a target site's replica directory.
type Store struct {
	dir   string
	clock clock.Clock
	// SeedDir is where seed images may be (Spec.Seed); "" refuses seeds.
	SeedDir string
	// CheckpointEvery is how many cuts a checkpoint covers (checkpoint.go);
	// 0 is DefaultCheckpointEvery.
	CheckpointEvery int

	mu       sync.Mutex
	machines map[string]*machine
}

// Open opens (creating) the replica directory dir and loads every
// machine in it, removing batches a crash left half written.
func Open(dir string, clk clock.Clock) (*Store, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	// Absolute: checkpoints name the images under them by absolute path.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("replica directory: %w", err)
	}
	s := &Store{dir: dir, clock: clk, machines: map[string]*machine{}}
	if err := os.MkdirAll(filepath.Join(dir, "machines"), 0o700); err != nil {
		return nil, fmt.Errorf("replica directory: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "machines"))
	if err != nil {
		return nil, fmt.Errorf("replica directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		m, err := loadMachine(filepath.Join(dir, "machines", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("machine %s: %w", e.Name(), err)
		}
		if m != nil {
			s.machines[m.spec.Machine] = m
		}
	}
	return s, nil
}

// machine is one replicated machine's directory (docs/replication.md):
//
//	spec.json            the Spec
//	base.json            the cut the base images hold, and a fold in progress
//	base/DISK.raw        base images (sparse)
//	journal/SEQ.batch    one batch per cut after the base, SEQ 20 digits
//	checkpoints/SEQ/     the disks at cut SEQ, over the checkpoint before
//	failover/NAME/       an active failover (blocks folding)
type machine struct {
	// ckMu is held while checkpoints are made or dropped, and while the
	// base folds (whose batches and chain a checkpoint reads); taken
	// before mu.
	ckMu sync.Mutex
	mu   sync.Mutex
	// prepared are the rebased checkpoint copies (file.tmp) made by
	// prepareRebase for the fold under way; guarded by ckMu.
	prepared map[string]bool
	dir      string
	spec     Spec
	base     baseState
	cuts     []Cut // journal, after the base, in order
	// links are the checkpoints' cuts, oldest first, all after the base.
	links []uint64
	// receiving is set while a batch streams in (without mu held).
	receiving bool
	// failingOver counts the real (not test) failovers under way: from
	// the point's choice on, no batch is admitted or kept, so the replica
	// never holds a cut past the point the failed-over machine started at.
	failingOver int
	// id tells this replica of the machine from an earlier one of the
	// same name (replica.id, random, made at registration).
	id string
}

type baseState struct {
	Cut Cut `json:"cut"`
	// Folding is the batch being folded into the base: the base may hold
	// part of it, so points before it are gone and it must be re-applied.
	Folding uint64 `json:"folding,omitempty"`
}

func loadMachine(dir string) (*machine, error) {
	m := &machine{dir: dir}
	data, err := os.ReadFile(filepath.Join(dir, "spec.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // registration never completed
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &m.spec); err != nil {
		return nil, fmt.Errorf("spec.json: %w", err)
	}
	// Its names become paths under dir: hold it to what Register accepted.
	if err := m.spec.Validate(); err != nil {
		return nil, fmt.Errorf("spec.json: %w", err)
	}
	if m.spec.Machine != filepath.Base(dir) {
		return nil, fmt.Errorf("spec.json: %w: the spec of %q in the directory of %q", ErrInvalid, m.spec.Machine, filepath.Base(dir))
	}
	if data, err := os.ReadFile(filepath.Join(dir, "base.json")); err == nil {
		if err := json.Unmarshal(data, &m.base); err != nil {
			return nil, fmt.Errorf("base.json: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	jdir := filepath.Join(dir, "journal")
	ents, err := os.ReadDir(jdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "tmp-") {
			// A batch being received when the target died: never acked.
			if err := os.Remove(filepath.Join(jdir, name)); err != nil {
				return nil, err
			}
			continue
		}
		seq, ok := batchSeq(name)
		if !ok {
			continue
		}
		if seq <= m.base.Cut.Seq && m.base.Folding != seq {
			// Folded already; its removal did not happen.
			if err := os.Remove(filepath.Join(jdir, name)); err != nil {
				return nil, err
			}
			continue
		}
		c, err := readCut(filepath.Join(jdir, name))
		if err != nil {
			return nil, fmt.Errorf("journal batch %s (acknowledged, so it must be whole): %w", name, err)
		}
		m.cuts = append(m.cuts, c)
	}
	sort.Slice(m.cuts, func(i, j int) bool { return m.cuts[i].Seq < m.cuts[j].Seq })
	if m.id, err = replicaID(dir); err != nil {
		return nil, err
	}
	if err := m.removeStaleHolds(); err != nil {
		return nil, fmt.Errorf("removing stale holds: %w", err)
	}
	if m.base.Folding != 0 {
		// Finish the fold a crash interrupted: applying a batch again is
		// harmless, it holds contents, not differences.
		if err := m.foldLocked(context.Background(), m.base.Folding); err != nil {
			return nil, fmt.Errorf("finishing an interrupted fold: %w", err)
		}
	}
	if err := m.loadCheckpoints(context.Background()); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	return m, nil
}

// replicaID reads the replica's ID from dir/replica.id, making one when
// there is none (a new replica, or one made before IDs were kept).
func replicaID(dir string) (string, error) {
	path := filepath.Join(dir, "replica.id")
	var id string
	data, err := os.ReadFile(path)
	if err == nil && json.Unmarshal(data, &id) == nil && id != "" {
		return id, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id = randomHex() + randomHex()
	if err := WriteJSON(path, id); err != nil {
		return "", err
	}
	return id, nil
}

func batchName(seq uint64) string { return fmt.Sprintf("%020d.batch", seq) }

func batchSeq(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".batch")
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func readCut(path string) (Cut, error) {
	f, err := os.Open(path)
	if err != nil {
		return Cut{}, err
	}
	defer f.Close()
	// Only the header: a batch was checked whole before it was renamed into
	// the journal, and is checked again whenever it is applied, so a start
	// does not read the whole history.
	h, err := ReadHeader(f)
	if err != nil {
		return Cut{}, err
	}
	st, err := f.Stat()
	if err != nil {
		return Cut{}, err
	}
	return Cut{Seq: h.Seq, Time: h.Cut, Consistency: h.Consistency, Full: h.Full, Bytes: st.Size(), Group: h.Group, GroupCut: h.GroupCut}, nil
}

func (s *Store) machine(name string) (*machine, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[name]
	if m == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return m, nil
}

// Register creates or updates a machine's spec. A machine's disks cannot
// change once it has data: disable and enable again for that.
func (s *Store) Register(ctx context.Context, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[spec.Machine]
	if m == nil {
		m = &machine{dir: filepath.Join(s.dir, "machines", spec.Machine)}
		for _, d := range []string{"base", "journal", "failover"} {
			if err := os.MkdirAll(filepath.Join(m.dir, d), 0o700); err != nil {
				return fmt.Errorf("registering %s: %w", spec.Machine, err)
			}
		}
		if err := s.seed(ctx, m, spec); err != nil {
			os.RemoveAll(m.dir)
			return err
		}
		var err error
		if m.id, err = replicaID(m.dir); err != nil {
			return fmt.Errorf("registering %s: %w", spec.Machine, err)
		}
		for _, d := range spec.Disks {
			f, err := os.OpenFile(filepath.Join(m.dir, "base", d.Name+".raw"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				return fmt.Errorf("registering %s: %w", spec.Machine, err)
			}
			err = f.Truncate(d.Size)
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				return fmt.Errorf("registering %s: base image of %s: %w", spec.Machine, d.Name, err)
			}
		}
	} else {
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.cuts) > 0 || m.base.Cut.Seq > 0 {
			if !SameDisks(m.spec.Disks, spec.Disks) {
				return fmt.Errorf("%w: machine %s is replicated with disks %v; it now has %v: disable its replication and enable it again", ErrInvalid, spec.Machine, m.spec.Disks, spec.Disks)
			}
		}
	}
	if err := WriteJSON(filepath.Join(m.dir, "spec.json"), spec); err != nil {
		return fmt.Errorf("registering %s: %w", spec.Machine, err)
	}
	m.spec = spec
	s.machines[spec.Machine] = m
	return nil
}

// seed converts the spec's seed images into the new machine's base images
// and makes them its first cut (consistency "seed").
func (s *Store) seed(ctx context.Context, m *machine, spec Spec) error {
	if len(spec.Seed) == 0 {
		return nil
	}
	if s.SeedDir == "" {
		return fmt.Errorf("%w: this site takes no seed images (replica serve --seed-dir)", ErrInvalid)
	}
	root, err := filepath.EvalSymlinks(s.SeedDir)
	if err != nil {
		return fmt.Errorf("seed directory: %w", err)
	}
	sizes := map[string]int64{}
	for _, d := range spec.Disks {
		sizes[d.Name] = d.Size
	}
	for disk, path := range spec.Seed {
		size, ok := sizes[disk]
		if !ok {
			return fmt.Errorf("%w: seed for disk %q, which the machine does not have", ErrInvalid, disk)
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return fmt.Errorf("%w: seed image of %s: %v", ErrInvalid, disk, err)
		}
		if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			return fmt.Errorf("%w: seed image %s is outside the site's seed directory %s", ErrInvalid, path, s.SeedDir)
		}
		out := filepath.Join(m.dir, "base", disk+".raw")
		if msg, err := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-O", "raw", real, out).CombinedOutput(); err != nil {
			return fmt.Errorf("seeding disk %s from %s: %v: %s", disk, path, err, msg)
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		if st.Size() != size {
			return fmt.Errorf("%w: seed image %s is %d bytes, disk %s is %d", ErrInvalid, path, st.Size(), disk, size)
		}
	}
	m.base = baseState{Cut: Cut{Seq: 1, Time: s.clock.Now(), Consistency: "seed"}}
	return WriteJSON(filepath.Join(m.dir, "base.json"), m.base)
}

// SameDisks tells whether two disk lists are the same, in order.
func SameDisks(a, b []DiskSpec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Remove deletes a machine's replica (replicate disable). It refuses while
// a failover of it is active.
func (s *Store) Remove(ctx context.Context, name string) error {
	m, err := s.machine(name)
	if err != nil {
		return err
	}
	m.ckMu.Lock()
	defer m.ckMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if fo, _ := m.failovers(); len(fo) > 0 {
		return fmt.Errorf("%w: %s (%s): clean the failover up first", ErrFailedOver, name, strings.Join(fo, ", "))
	}
	s.mu.Lock()
	delete(s.machines, name)
	s.mu.Unlock()
	// Renamed first, so a crash mid-removal does not leave a half machine.
	gone := filepath.Join(s.dir, "machines", "."+name+".removed")
	os.RemoveAll(gone)
	if err := os.Rename(m.dir, gone); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return os.RemoveAll(gone)
}

// Status is a machine's replica as the target sees it.
type Status struct {
	Machine      string  `json:"machine"`
	LastSeq      uint64  `json:"last_seq"`
	LastCut      *Cut    `json:"last_cut,omitempty"`
	Points       []Point `json:"points"`
	JournalBytes int64   `json:"journal_bytes"`
	JournalCuts  int     `json:"journal_cuts"`
	// Checkpoints is how many checkpoints the site holds, the newest at
	// cut CheckpointSeq: a failover applies the batches after the newest
	// checkpoint at or before its point.
	Checkpoints   int        `json:"checkpoints"`
	CheckpointSeq uint64     `json:"checkpoint_seq,omitempty"`
	Failovers     []string   `json:"failovers,omitempty"`
	Disks         []DiskSpec `json:"disks"`
	// Definition is the machine's stored definition, as the source sent it.
	Definition json.RawMessage `json:"definition,omitempty"`
}

// Status reports a machine's replica.
func (s *Store) Status(ctx context.Context, name string) (Status, error) {
	m, err := s.machine(name)
	if err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Machine: name, LastSeq: m.lastSeq(), Points: m.points(s.clock), JournalCuts: len(m.cuts), Disks: m.spec.Disks,
		Definition: m.spec.Definition}
	if c, ok := m.lastCut(); ok {
		st.LastCut = &c
	}
	for _, c := range m.cuts {
		st.JournalBytes += c.Bytes
	}
	if st.Checkpoints = len(m.links); st.Checkpoints > 0 {
		st.CheckpointSeq = m.links[st.Checkpoints-1]
	}
	st.Failovers, _ = m.failovers()
	return st, nil
}

func (m *machine) lastSeq() uint64 {
	if n := len(m.cuts); n > 0 {
		return m.cuts[n-1].Seq
	}
	return m.base.Cut.Seq
}

func (m *machine) lastCut() (Cut, bool) {
	if n := len(m.cuts); n > 0 {
		return m.cuts[n-1], true
	}
	return m.base.Cut, m.base.Cut.Seq > 0
}

// allCuts is the base's cut (when it holds one) followed by the journal's.
func (m *machine) allCuts() []Cut {
	var all []Cut
	if m.base.Cut.Seq > 0 {
		all = append(all, m.base.Cut)
	}
	return append(all, m.cuts...)
}

func (m *machine) points(clk clock.Clock) []Point {
	return Points(m.allCuts(), m.spec.Policy, clk.Now())
}

func (m *machine) failovers() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, "failover"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// baseHeld tells whether a failover reads the base: one being made (no
// record yet) or one whose disks are not standalone (not committed).
func (m *machine) baseHeld() (bool, error) {
	names, err := m.failovers()
	if err != nil {
		return false, err
	}
	fos, err := m.failoverRecords()
	if err != nil {
		return false, err
	}
	if len(fos) < len(names) {
		return true, nil
	}
	for _, fo := range fos {
		if !fo.Committed {
			return true, nil
		}
	}
	return false, nil
}

// Receive stores batch seq of a machine from r and returns once it is
// durable: the acknowledgement. A batch the target already holds (its
// acknowledgement was lost) is acknowledged again without being read.
func (s *Store) Receive(ctx context.Context, name string, seq uint64, r io.Reader) error {
	m, err := s.machine(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	last := m.lastSeq()
	err = m.admit(name, seq, last)
	disks := m.spec.Disks
	if err == nil && seq > last {
		m.receiving = true
	}
	m.mu.Unlock()
	if err != nil || seq <= last {
		return err
	}
	// The batch streams in without the machine's lock: status, points and
	// failovers of older points answer meanwhile.
	defer func() {
		m.mu.Lock()
		m.receiving = false
		m.mu.Unlock()
	}()
	jdir := filepath.Join(m.dir, "journal")
	tmp, err := os.CreateTemp(jdir, "tmp-")
	if err != nil {
		return fmt.Errorf("receiving batch %d of %s: %w", seq, name, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	// Checked as it is written: a torn or corrupt batch is never renamed.
	h, recs, err := ReadBatch(io.TeeReader(ctxReader{ctx, r}, tmp))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("receiving batch %d of %s: %w", seq, name, cerr)
		}
		return fmt.Errorf("%w: batch %d of %s: %w", ErrInvalid, seq, name, err)
	}
	if h.Seq != seq {
		return fmt.Errorf("%w: batch sent as %d says it is %d", ErrInvalid, seq, h.Seq)
	}
	for _, rec := range recs {
		if rec.Disk >= len(disks) || rec.Off+rec.Len > disks[rec.Disk].Size || rec.Off+rec.Len < rec.Off {
			return fmt.Errorf("%w: batch %d of %s writes outside its disks (disk %d, %d+%d)", ErrInvalid, seq, name, rec.Disk, rec.Off, rec.Len)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("receiving batch %d of %s: %w", seq, name, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// A real failover that began while the batch streamed in chose its
	// point without it: the batch is dropped, not acknowledged.
	if err := m.refuseFailedOver(name); err != nil {
		return err
	}
	final := filepath.Join(jdir, batchName(seq))
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("receiving batch %d of %s: %w", seq, name, err)
	}
	if err := syncDir(jdir); err != nil {
		return fmt.Errorf("receiving batch %d of %s: %w", seq, name, err)
	}
	m.cuts = append(m.cuts, Cut{Seq: seq, Time: h.Cut, Consistency: h.Consistency, Full: h.Full, Bytes: st.Size(), Group: h.Group, GroupCut: h.GroupCut})
	return nil
}

// refuseFailedOver is ErrFailedOver while a real failover of the machine
// exists or is under way: the replica takes no more batches.
func (m *machine) refuseFailedOver(name string) error {
	if m.failingOver > 0 {
		return fmt.Errorf("%w: %s is being failed over at this site", ErrFailedOver, name)
	}
	if fos, _ := m.failoverRecords(); len(fos) > 0 {
		for _, fo := range fos {
			if !fo.Test {
				return fmt.Errorf("%w: %s runs at this site as %s", ErrFailedOver, name, fo.Name)
			}
		}
	}
	return nil
}

// admit checks that batch seq may be received now (last is the replica's
// newest cut); a batch held already is admitted (and not read).
func (m *machine) admit(name string, seq, last uint64) error {
	if seq <= last {
		return nil
	}
	if err := m.refuseFailedOver(name); err != nil {
		return err
	}
	if seq != last+1 {
		return fmt.Errorf("%w: got batch %d of %s, the replica holds up to %d", ErrOutOfOrder, seq, name, last)
	}
	if m.receiving {
		return fmt.Errorf("%w: batch %d of %s is being received already", ErrOutOfOrder, seq, name)
	}
	return nil
}

// Fold advances the base of a machine as the policy allows (FoldTo),
// unless a failover of it is active (its disks are overlays over the
// base), and drops the checkpoints the base reached. It returns how many
// batches it folded.
func (s *Store) Fold(ctx context.Context, name string) (int, error) {
	m, err := s.machine(name)
	if err != nil {
		return 0, err
	}
	m.ckMu.Lock()
	defer m.ckMu.Unlock()
	// The checkpoint the fold will rebase onto the base is copied first,
	// without the machine's lock, so batches keep arriving meanwhile.
	m.mu.Lock()
	held, err := m.baseHeld()
	to := FoldTo(m.allCuts(), m.spec.Policy, s.clock.Now())
	links := slices.Clone(m.links)
	m.mu.Unlock()
	if err != nil || held {
		return 0, err
	}
	defer m.prepareRebase(ctx, links, to)()
	m.mu.Lock()
	defer m.mu.Unlock()
	if held, err := m.baseHeld(); err != nil || held {
		return 0, err // a failover or hold began meanwhile
	}
	n := 0
	for len(m.cuts) > 0 && m.cuts[0].Seq <= to {
		if err := m.foldLocked(ctx, m.cuts[0].Seq); err != nil {
			return n, fmt.Errorf("folding batch %d of %s into its base: %w", m.cuts[0].Seq, name, err)
		}
		n++
	}
	if err := m.dropFolded(ctx); err != nil {
		return n, fmt.Errorf("dropping the checkpoints of %s the base reached: %w", name, err)
	}
	return n, nil
}

// foldLocked applies batch seq (the journal's first) to the base images:
// base.json says "folding seq" first, the batch is written and the images
// fsynced, base.json moves to seq, and the batch file goes.
func (m *machine) foldLocked(ctx context.Context, seq uint64) error {
	if len(m.cuts) == 0 || m.cuts[0].Seq != seq {
		return fmt.Errorf("batch %d is not the journal's first", seq)
	}
	c := m.cuts[0]
	if m.base.Folding != seq {
		m.base.Folding = seq
		if err := WriteJSON(filepath.Join(m.dir, "base.json"), m.base); err != nil {
			return err
		}
	}
	files := make([]*nbd.FileBackend, len(m.spec.Disks))
	for i, d := range m.spec.Disks {
		f, err := nbd.OpenFileBackend(filepath.Join(m.dir, "base", d.Name+".raw"), false)
		if err != nil {
			return err
		}
		defer f.Close()
		files[i] = f
	}
	path := filepath.Join(m.dir, "journal", batchName(seq))
	if err := applyBatch(ctx, path, func(disk int) diskWriter { return fileWriter{files[disk]} }); err != nil {
		return err
	}
	for _, f := range files {
		if err := f.Flush(ctx); err != nil {
			return err
		}
	}
	m.base = baseState{Cut: Cut{Seq: c.Seq, Time: c.Time, Consistency: c.Consistency, Group: c.Group, GroupCut: c.GroupCut}}
	if err := WriteJSON(filepath.Join(m.dir, "base.json"), m.base); err != nil {
		return err
	}
	m.cuts = m.cuts[1:]
	if err := os.Remove(path); err != nil {
		return err
	}
	return nil
}

// WriteJSON replaces path atomically and durably with v as indented JSON
// (written to path.tmp, fsynced, renamed, the directory fsynced).
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
