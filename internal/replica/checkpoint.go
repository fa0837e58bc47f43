package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Checkpoints bound the work of a failover. Without them a point's disks
// are overlays over the base with every journal batch since the base
// written into them: with a cut every 2 s and 24 h of retention, up to
// 43,200 batches. A checkpoint is the state of every disk at one cut,
// materialised as a qcow2 image holding only the writes of the batches
// since the checkpoint before it (or the base), whose backing file is that
// checkpoint (or the base image):
//
//	base/DISK.raw ← checkpoints/S1/DISK.qcow2 ← checkpoints/S2/DISK.qcow2 ← …
//
// A new one is made (in the background, at each fold tick) every
// CheckpointEvery cuts. A failover or hold to point P makes its overlays
// over the newest checkpoint at or before P and writes only the batches
// after it: at most CheckpointEvery-1 of them, whatever the history's
// length or the disks' size. The journal stays what it is — every cut is
// still there, so every point (and every exact group cut) reads the same,
// bit for bit — and checkpoints are derived from it: one lost or damaged
// is made again from the journal, never a lost point.
//
// Folding keeps the chain right without rewriting it: a checkpoint at cut
// S holds every block written after its predecessor's cut, so the base may
// advance to any cut up to S under it (blocks the checkpoint does not hold
// were not written in between). Once the base reaches a checkpoint's cut,
// that checkpoint is dropped and the next one is rebased onto the base
// image (its header only, written to a copy that replaces it atomically).
// The layout and crash rules are in docs/replication.md ("Checkpoints").

// DefaultCheckpointEvery is how many cuts a checkpoint covers when the
// store does not say: 256 cuts, 8.5 minutes at one cut every 2 s, about
// half a second of batches to apply after the checkpoint.
const DefaultCheckpointEvery = 256

// checkpointCluster is the checkpoints' qcow2 cluster size: a 4 KiB write
// of a journal allocates 4 KiB, not the 64 KiB default cluster (copied
// from the chain below).
const checkpointCluster = 4096

// checkpointFault, set by tests, is called at each step of making and
// dropping checkpoints; an error there stops the step as a crash would.
var checkpointFault func(step string) error

func injectFault(step string) error {
	if checkpointFault != nil {
		return checkpointFault(step)
	}
	return nil
}

func seqName(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func (m *machine) checkpointsDir() string { return filepath.Join(m.dir, "checkpoints") }

// linkFile is disk's image in the checkpoint at cut seq.
func (m *machine) linkFile(seq uint64, disk string) string {
	return filepath.Join(m.checkpointsDir(), seqName(seq), disk+".qcow2")
}

// linkBacking is the backing file a checkpoint's image of disk names
// when the checkpoint before it is at cut prev (0: the base), and its
// format. The name is absolute: QEMU joins relative names to the path of
// the image naming them, so a chain of relative names would outgrow
// PATH_MAX after about 160 checkpoints.
func (m *machine) linkBacking(prev uint64, disk string) (string, string) {
	if prev == 0 {
		return filepath.Join(m.dir, "base", disk+".raw"), "raw"
	}
	return m.linkFile(prev, disk), "qcow2"
}

// startFor is where the disks of the point at cut pt start (the newest
// checkpoint at or before it, 0 for the base) and the journal batches
// after it up to pt. m.mu is held.
func (m *machine) startFor(pt uint64) (uint64, []string) {
	var from uint64
	for _, l := range m.links {
		if l <= pt {
			from = l
		}
	}
	var batches []string
	for _, c := range m.cuts {
		if c.Seq > from && c.Seq <= pt {
			batches = append(batches, filepath.Join(m.dir, "journal", batchName(c.Seq)))
		}
	}
	return from, batches
}

// startSource is disk's image the overlays of a point starting at
// checkpoint from (0: the base) are made over, and its format.
func (m *machine) startSource(from uint64, disk string) (string, string) {
	if from == 0 {
		return filepath.Join(m.dir, "base", disk+".raw"), "raw"
	}
	return m.linkFile(from, disk), "qcow2"
}

// Checkpoint makes the checkpoints a machine's journal is due (one every
// CheckpointEvery cuts after the newest one, or the base), and returns
// how many it made. The batches are applied without the machine's lock:
// receiving, status and failovers go on meanwhile.
func (s *Store) Checkpoint(ctx context.Context, name string) (int, error) {
	m, err := s.machine(name)
	if err != nil {
		return 0, err
	}
	every := s.CheckpointEvery
	if every <= 0 {
		every = DefaultCheckpointEvery
	}
	m.ckMu.Lock()
	defer m.ckMu.Unlock()
	n := 0
	for {
		m.mu.Lock()
		prev := uint64(0)
		if k := len(m.links); k > 0 {
			prev = m.links[k-1]
		}
		var batches []string
		var to uint64
		full := false
		for _, c := range m.cuts {
			if c.Seq > prev && len(batches) < every {
				batches = append(batches, filepath.Join(m.dir, "journal", batchName(c.Seq)))
				to = c.Seq
				full = full || c.Full
			}
		}
		disks := m.spec.Disks
		m.mu.Unlock()
		// A full cut (a resync) is folded into the base at the next fold
		// instead: a checkpoint holding it would copy the whole disks.
		if len(batches) < every || full {
			return n, nil
		}
		if err := m.makeCheckpoint(ctx, prev, to, disks, batches); err != nil {
			return n, fmt.Errorf("making the checkpoint of %s at cut %d: %w", name, to, err)
		}
		m.mu.Lock()
		m.links = append(m.links, to)
		m.mu.Unlock()
		n++
	}
}

// makeCheckpoint writes the checkpoint at cut to over the one at prev (0:
// the base) into checkpoints/tmp-SEQ, fsyncs its images, and renames the
// directory to checkpoints/SEQ: a checkpoint exists whole or not at all.
// m.ckMu is held (nothing folds meanwhile).
func (m *machine) makeCheckpoint(ctx context.Context, prev, to uint64, disks []DiskSpec, batches []string) error {
	if err := os.MkdirAll(m.checkpointsDir(), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(m.checkpointsDir(), "tmp-"+seqName(to))
	os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	from := func(d DiskSpec) (string, string) { return m.linkBacking(prev, d.Name) }
	if err := writeOverlays(ctx, from, disks, batches, tmp, checkpointCluster); err != nil {
		return err
	}
	for _, d := range disks {
		if err := syncFile(filepath.Join(tmp, d.Name+".qcow2")); err != nil {
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := injectFault("checkpoint-written"); err != nil {
		ok = true // as a crash: the temporary directory stays behind
		return err
	}
	if err := os.Rename(tmp, filepath.Join(m.checkpointsDir(), seqName(to))); err != nil {
		return err
	}
	ok = true
	return syncDir(m.checkpointsDir())
}

// dropFolded removes the checkpoints at or before the base's cut, once the
// first one after it reads the base image. m.mu and m.ckMu are held.
//
// They leave m.links first, whatever fails after: the base past them, a
// chain starting at one would read the base's newer blocks. The first one
// kept reads right through them until it is rebased (see checkpoint.go's
// top), and their directories, found by listing, go on the next call.
func (m *machine) dropFolded(ctx context.Context) error {
	var keep []uint64
	for _, l := range m.links {
		if l > m.base.Cut.Seq {
			keep = append(keep, l)
		}
	}
	m.links = keep
	ents, err := os.ReadDir(m.checkpointsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var gone []uint64
	for _, e := range ents {
		if l, ok := parseSeq(e.Name()); ok && l <= m.base.Cut.Seq {
			gone = append(gone, l)
		}
	}
	if len(keep) > 0 { // a header read per disk when it reads the base already
		if err := m.rebaseOnBase(ctx, keep[0]); err != nil {
			return fmt.Errorf("rebasing checkpoint %d onto the base: %w", keep[0], err)
		}
	}
	for _, l := range gone {
		if err := injectFault("drop"); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(m.checkpointsDir(), seqName(l))); err != nil {
			return fmt.Errorf("removing checkpoint %d: %w", l, err)
		}
	}
	return nil
}

// rebaseOnBase makes the checkpoint at seq read the base image under it,
// disk by disk: a copy of its image gets the new backing name and
// replaces it (rename), so a crash leaves each image whole, reading either
// the base or the folded checkpoint before it — both right. A copy made
// beforehand by prepareRebase (outside the machine's lock) is used as is.
func (m *machine) rebaseOnBase(ctx context.Context, seq uint64) error {
	for _, d := range m.spec.Disks {
		file := m.linkFile(seq, d.Name)
		want, _ := m.linkBacking(0, d.Name)
		if got, err := qcow2Backing(file); err != nil {
			return err
		} else if got == want {
			continue
		}
		tmp := file + ".tmp"
		if !m.prepared[tmp] { // never a leftover of a crash: it may be cut short
			if err := m.rebasedCopy(ctx, file, tmp, d.Name); err != nil {
				return err
			}
		}
		if err := injectFault("rebase"); err != nil {
			return err // a crash here leaves tmp, never used again
		}
		if err := os.Rename(tmp, file); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("rebasing %s: %w", file, err)
		}
		if err := syncDir(filepath.Dir(file)); err != nil {
			return err
		}
	}
	return nil
}

// rebasedCopy writes tmp, a copy of the checkpoint image file that reads
// the base image of disk instead, fsynced.
func (m *machine) rebasedCopy(ctx context.Context, file, tmp, disk string) error {
	want, format := m.linkBacking(0, disk)
	if err := copyFile(file, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", format, "-b", want, tmp).CombinedOutput()
	if err == nil {
		err = syncFile(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rebasing %s: %v %s", file, err, out)
	}
	return nil
}

// prepareRebase makes, ahead of a fold that drops the checkpoints up to
// and including the cut `to`, the rebased copies of the checkpoint that
// will then be the first (file.tmp beside each image), so that the copy
// — as large as the blocks written in CheckpointEvery cuts — is made
// without the machine's lock, which receiving batches needs. The caller
// holds ckMu (no checkpoint is made or dropped meanwhile) but not mu; it
// returns what removes the copies, which rebaseOnBase renames into place
// when the fold drops as planned.
func (m *machine) prepareRebase(ctx context.Context, links []uint64, to uint64) func() {
	var next uint64
	dropped := false
	for _, l := range links {
		if l <= to {
			dropped = true
		} else {
			next = l
			break
		}
	}
	if !dropped || next == 0 {
		return func() {}
	}
	var tmps []string
	for _, d := range m.spec.Disks {
		file := m.linkFile(next, d.Name)
		want, _ := m.linkBacking(0, d.Name)
		if got, err := qcow2Backing(file); err != nil || got == want {
			continue
		}
		tmp := file + ".tmp"
		if err := m.rebasedCopy(ctx, file, tmp, d.Name); err != nil {
			break // made again under the lock, as before
		}
		tmps = append(tmps, tmp)
	}
	if len(tmps) > 0 {
		injectFault("rebase-prepared") // tests: the machine's lock is free here
	}
	m.prepared = make(map[string]bool, len(tmps))
	for _, t := range tmps {
		m.prepared[t] = true
	}
	return func() {
		m.prepared = nil
		for _, t := range tmps {
			os.Remove(t) // renamed already when the fold used it
		}
	}
}

// loadCheckpoints finds a machine's checkpoints when it is loaded and
// repairs what a crash left: a checkpoint being made (tmp-*) is removed,
// checkpoints at or before the base are dropped (the next one rebased),
// and a checkpoint that is not whole or does not read the one before it
// is removed with every one after it (they are made again).
func (m *machine) loadCheckpoints(ctx context.Context) error {
	ents, err := os.ReadDir(m.checkpointsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil // none yet, or a replica made before checkpoints
	}
	if err != nil {
		return err
	}
	var links []uint64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tmp-") {
			if err := os.RemoveAll(filepath.Join(m.checkpointsDir(), e.Name())); err != nil {
				return err
			}
			continue
		}
		if seq, ok := parseSeq(e.Name()); ok && e.IsDir() {
			links = append(links, seq)
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i] < links[j] })
	last := m.lastSeq()
	valid := 0
	for i, l := range links {
		prev := uint64(0)
		if i > 0 {
			prev = links[i-1]
		}
		if l > last || !m.linkWhole(l, prev) {
			break
		}
		valid = i + 1
	}
	for _, l := range links[valid:] {
		if err := os.RemoveAll(filepath.Join(m.checkpointsDir(), seqName(l))); err != nil {
			return err
		}
	}
	m.links = links[:valid]
	return m.dropFolded(ctx)
}

// linkWhole tells whether the checkpoint at seq, whose predecessor on
// disk is the checkpoint at prev (0: none), has every disk's image, each
// reading a right backing file: the checkpoint at prev; the base, when
// prev is none or the base has passed it; or a checkpoint the base has
// passed and that is gone (dropped, the rebase of this one cut short).
func (m *machine) linkWhole(seq, prev uint64) bool {
	for _, d := range m.spec.Disks {
		got, err := qcow2Backing(m.linkFile(seq, d.Name))
		if err != nil {
			return false
		}
		if want, _ := m.linkBacking(prev, d.Name); prev != 0 && got == want {
			continue
		}
		if base, _ := m.linkBacking(0, d.Name); got == base && prev <= m.base.Cut.Seq {
			continue
		}
		p, ok := parseSeq(filepath.Base(filepath.Dir(got)))
		if !ok || got != m.linkFile(p, d.Name) || p > m.base.Cut.Seq || p < prev || p >= seq {
			return false
		}
	}
	return true
}

func parseSeq(s string) (uint64, bool) {
	if len(s) != 20 {
		return 0, false
	}
	return batchSeq(s + ".batch")
}

// qcow2Backing reads the backing file name in a qcow2 image's header
// ("" for none).
func qcow2Backing(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h [20]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return "", fmt.Errorf("%s: qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s: not a qcow2 image", path)
	}
	off, n := binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
	if off == 0 || n == 0 {
		return "", nil
	}
	if n > 1023 {
		return "", fmt.Errorf("%s: backing file name of %d bytes", path, n)
	}
	name := make([]byte, n)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("%s: backing file name: %w", path, err)
	}
	return string(name), nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyFile copies src to a new dst (a checkpoint's image: a few MiB).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
