// Package journal is the source journal of continuous replication: a
// durable, ordered log of the writes captured from a running machine,
// appended by the capture (the receiver QEMU's mirror writes to) and read
// in order by the shipper, which acknowledges what the target holds.
//
// A position is a byte offset in the log since the journal was created.
// The log is a directory of segment files, each named by the position of
// its first record (20 decimal digits, ".seg"); a segment all of whose
// records were acknowledged is deleted. Appends are ordered (one at a
// time, in the order the calls take the lock) and reach the page cache
// before Append returns, so they survive the process being killed; Sync
// makes them durable against a host crash (the receiver calls it on an
// NBD FLUSH or FUA; concurrent calls share one fsync).
//
// The journal is bounded: an append that would make the unacknowledged
// part exceed the limit fails with ErrFull, and so does every later one
// (the capture must fall back to change tracking; the journal is not
// resumed after that, nor after the process restarts: whoever uses it
// keeps a dirty bitmap covering everything not yet acknowledged).
package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Record kinds.
const (
	KindData   = 1 // Len bytes of data at Off of Disk
	KindZero   = 2 // Len bytes at Off of Disk read as zeros
	KindMarker = 3 // a point the shipper must cut a batch at (Off carries its id)
)

// HeaderSize is the size of a record's header on disk:
//
//	magic u32 "LBJ1", kind u8, disk u32, off u64, len u64, time i64 (Unix ns),
//	crc u32 (CRC-32C of the header before it and the data)
//
// followed by Len bytes of data for KindData. Integers are big-endian.
const HeaderSize = 4 + 1 + 4 + 8 + 8 + 8 + 4

var magic = [4]byte{'L', 'B', 'J', '1'}

// SegmentSize is the size past which appends go to a new segment file.
const SegmentSize = 16 << 20

var (
	// ErrFull: the unacknowledged part of the journal reached its limit.
	ErrFull = errors.New("the source journal is full")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("the source journal is closed")
	// ErrCorrupt: a record read back does not match its checksum.
	ErrCorrupt = errors.New("the source journal is corrupt")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one entry of the journal.
type Record struct {
	Pos  int64 // position of the record's header
	Kind byte
	Disk int
	Off  int64
	Len  int64
	Time time.Time
	Data []byte // KindData only
}

// End is the position just after the record.
func (r Record) End() int64 {
	n := r.Pos + HeaderSize
	if r.Kind == KindData {
		n += r.Len
	}
	return n
}

// Journal is an open journal. Its methods are safe for concurrent use.
type Journal struct {
	dir   string
	limit int64
	now   func() time.Time

	mu       sync.Mutex
	cond     *sync.Cond
	segs     []int64 // start positions of the segment files, ascending
	f        *os.File
	end      int64
	acked    int64
	full     bool
	closed   bool
	failure  error
	appended time.Time // time of the last append

	syncMu sync.Mutex
	synced int64
}

// Create makes an empty journal in dir (removing any earlier one there)
// whose unacknowledged part may grow to limit bytes; now stamps records.
func Create(dir string, limit int64, now func() time.Time) (*Journal, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("removing the old journal %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the journal %s: %w", dir, err)
	}
	j := &Journal{dir: dir, limit: limit, now: now}
	j.cond = sync.NewCond(&j.mu)
	if err := j.newSegment(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *Journal) segPath(start int64) string {
	return filepath.Join(j.dir, fmt.Sprintf("%020d.seg", start))
}

// newSegment starts a segment at the end; j.mu is held (or j is new).
func (j *Journal) newSegment() error {
	f, err := os.OpenFile(j.segPath(j.end), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal segment: %w", err)
	}
	if j.f != nil {
		// The finished segment is made durable before any later record
		// can be: a synced position never has a hole below it.
		if err := j.f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("journal segment: %w", err)
		}
		j.f.Close()
	}
	j.f = f
	j.segs = append(j.segs, j.end)
	return syncDir(j.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append adds a record (kind, disk, off, and data for KindData or length
// for the others) and returns its end position. After ErrFull, every
// append fails.
func (j *Journal) Append(kind byte, disk int, off int64, length int64, data []byte) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.appendLocked(kind, disk, off, length, data)
}

func (j *Journal) appendLocked(kind byte, disk int, off int64, length int64, data []byte) (int64, error) {
	switch {
	case j.closed:
		return 0, ErrClosed
	case j.failure != nil:
		return 0, j.failure
	case j.full:
		return 0, ErrFull
	}
	n := int64(HeaderSize)
	if kind == KindData {
		length = int64(len(data))
		n += length
	}
	if j.end+n-j.acked > j.limit {
		j.full = true
		j.cond.Broadcast()
		return 0, ErrFull
	}
	if j.end-j.segs[len(j.segs)-1] >= SegmentSize {
		if err := j.newSegment(); err != nil {
			j.failure = err
			return 0, err
		}
	}
	t := j.now()
	buf := make([]byte, HeaderSize, n)
	copy(buf, magic[:])
	buf[4] = kind
	binary.BigEndian.PutUint32(buf[5:], uint32(disk))
	binary.BigEndian.PutUint64(buf[9:], uint64(off))
	binary.BigEndian.PutUint64(buf[17:], uint64(length))
	binary.BigEndian.PutUint64(buf[25:], uint64(t.UnixNano()))
	crc := crc32.Update(crc32.Checksum(buf[:33], castagnoli), castagnoli, data)
	binary.BigEndian.PutUint32(buf[33:], crc)
	buf = append(buf, data...)
	if _, err := j.f.Write(buf); err != nil {
		// A short write leaves the segment unusable: stop here.
		j.failure = fmt.Errorf("appending to the journal: %w", err)
		j.cond.Broadcast()
		return 0, j.failure
	}
	j.end += n
	j.appended = t
	j.cond.Broadcast()
	return j.end, nil
}

// Sync makes every record appended before the call durable. Calls made
// while an fsync runs share the next one.
func (j *Journal) Sync() error {
	j.mu.Lock()
	want := j.end
	j.mu.Unlock()
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced >= want {
		return nil // an fsync that started after our records covered them
	}
	j.mu.Lock()
	f, got := j.f, j.end // records appended meanwhile are covered too
	j.mu.Unlock()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing the journal: %w", err)
	}
	j.synced = got
	return nil
}

// Lock holds off appends until Unlock: the capture's catch-up reads a
// block and appends it with no write of the guest slipping in between.
func (j *Journal) Lock() { j.mu.Lock() }

// Unlock ends Lock.
func (j *Journal) Unlock() { j.mu.Unlock() }

// AppendLocked is Append while Lock is held.
func (j *Journal) AppendLocked(kind byte, disk int, off int64, length int64, data []byte) (int64, error) {
	return j.appendLocked(kind, disk, off, length, data)
}

// Stats is the journal's use.
type Stats struct {
	End, Acked, Limit int64
	Full              bool
	LastAppend        time.Time
}

// Used is the unacknowledged part in bytes.
func (s Stats) Used() int64 { return s.End - s.Acked }

// Stats returns the journal's use.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Stats{End: j.end, Acked: j.acked, Limit: j.limit, Full: j.full, LastAppend: j.appended}
}

// Ack records that the target holds everything before pos, and removes the
// segments that lie wholly below it.
func (j *Journal) Ack(pos int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if pos > j.end || pos < j.acked {
		return fmt.Errorf("acknowledging journal position %d outside [%d, %d]", pos, j.acked, j.end)
	}
	j.acked = pos
	for len(j.segs) > 1 && j.segs[1] <= pos {
		if err := os.Remove(j.segPath(j.segs[0])); err != nil {
			return fmt.Errorf("removing an acknowledged journal segment: %w", err)
		}
		j.segs = j.segs[1:]
	}
	return nil
}

// Wait blocks until the journal's end passes pos, it is full, failed or
// closed, or timeout passes; it returns the end.
func (j *Journal) Wait(pos int64, timeout time.Duration) int64 {
	// The deadline is set before the timer starts, so the timer fires at
	// or after it: a wake-up sent before this call waits finds the
	// deadline passed (both happen under j.mu), and none is lost.
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		j.mu.Lock()
		j.cond.Broadcast()
		j.mu.Unlock()
	})
	defer t.Stop()
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.end <= pos && !j.full && !j.closed && j.failure == nil && time.Now().Before(deadline) {
		j.cond.Wait()
	}
	return j.end
}

// Err is why appends fail (ErrFull, a write error, ErrClosed), or nil.
func (j *Journal) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.failure != nil:
		return j.failure
	case j.full:
		return ErrFull
	case j.closed:
		return ErrClosed
	}
	return nil
}

// Close stops appends and closes the open segment; the files stay.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	j.cond.Broadcast()
	return j.f.Close()
}

// Remove closes the journal and deletes its files.
func (j *Journal) Remove() error {
	j.Close()
	return os.RemoveAll(j.dir)
}

// Reader reads records in order from a position up to the journal's end.
type Reader struct {
	j   *Journal
	pos int64
	f   *os.File
	seg int64 // start of the open segment
	buf []byte
}

// NewReader reads from pos, which must be a record boundary at or after
// the acknowledged position.
func (j *Journal) NewReader(pos int64) *Reader { return &Reader{j: j, pos: pos, seg: -1} }

// Pos is the position of the next record.
func (r *Reader) Pos() int64 { return r.pos }

// Close closes the reader's file.
func (r *Reader) Close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Next reads the next record if one ends at or before limit; io.EOF when
// none does. The record's Data is valid until the next call.
func (r *Reader) Next(limit int64) (Record, error) {
	if r.pos+HeaderSize > limit {
		return Record{}, io.EOF
	}
	r.j.mu.Lock()
	i := sort.Search(len(r.j.segs), func(i int) bool { return r.j.segs[i] > r.pos }) - 1
	var seg int64 = -1
	if i >= 0 {
		seg = r.j.segs[i]
	}
	r.j.mu.Unlock()
	if seg < 0 {
		return Record{}, fmt.Errorf("journal position %d was already removed", r.pos)
	}
	if seg != r.seg {
		r.Close()
		f, err := os.Open(r.j.segPath(seg))
		if err != nil {
			return Record{}, fmt.Errorf("opening a journal segment: %w", err)
		}
		r.f, r.seg = f, seg
	}
	var hdr [HeaderSize]byte
	if _, err := r.f.ReadAt(hdr[:], r.pos-seg); err != nil {
		if errors.Is(err, io.EOF) {
			// The segment ended: the next starts here.
			return r.nextSegment(limit)
		}
		return Record{}, fmt.Errorf("reading the journal at %d: %w", r.pos, err)
	}
	if [4]byte(hdr[:4]) != magic {
		return Record{}, fmt.Errorf("%w: no record at %d", ErrCorrupt, r.pos)
	}
	rec := Record{Pos: r.pos, Kind: hdr[4], Disk: int(binary.BigEndian.Uint32(hdr[5:])),
		Off: int64(binary.BigEndian.Uint64(hdr[9:])), Len: int64(binary.BigEndian.Uint64(hdr[17:])),
		Time: time.Unix(0, int64(binary.BigEndian.Uint64(hdr[25:])))}
	if rec.End() > limit {
		return Record{}, io.EOF
	}
	var data []byte
	if rec.Kind == KindData {
		if int64(cap(r.buf)) < rec.Len {
			r.buf = make([]byte, rec.Len)
		}
		data = r.buf[:rec.Len]
		if _, err := r.f.ReadAt(data, r.pos-seg+HeaderSize); err != nil {
			return Record{}, fmt.Errorf("reading the journal at %d: %w", r.pos, err)
		}
		rec.Data = data
	}
	if crc32.Update(crc32.Checksum(hdr[:33], castagnoli), castagnoli, data) != binary.BigEndian.Uint32(hdr[33:]) {
		return Record{}, fmt.Errorf("%w: checksum of the record at %d", ErrCorrupt, r.pos)
	}
	r.pos = rec.End()
	return rec, nil
}

func (r *Reader) nextSegment(limit int64) (Record, error) {
	r.j.mu.Lock()
	found := false
	for _, s := range r.j.segs {
		if s == r.pos {
			found = true
		}
	}
	r.j.mu.Unlock()
	if !found {
		return Record{}, fmt.Errorf("%w: segment %d ends before position %d", ErrCorrupt, r.seg, r.pos)
	}
	return r.Next(limit)
}

// segments lists the segment files of dir (for tests and diagnostics).
func segments(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".seg") {
			if _, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".seg"), 10, 64); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out, nil
}

// ReadAt reads len(p) bytes of the log at pos, which must lie inside one
// record's data (a record never spans two segments).
func (r *Reader) ReadAt(p []byte, pos int64) error {
	r.j.mu.Lock()
	i := sort.Search(len(r.j.segs), func(i int) bool { return r.j.segs[i] > pos }) - 1
	var seg int64 = -1
	if i >= 0 {
		seg = r.j.segs[i]
	}
	r.j.mu.Unlock()
	if seg < 0 {
		return fmt.Errorf("journal position %d was already removed", pos)
	}
	if seg != r.seg {
		r.Close()
		f, err := os.Open(r.j.segPath(seg))
		if err != nil {
			return fmt.Errorf("opening a journal segment: %w", err)
		}
		r.f, r.seg = f, seg
	}
	if _, err := r.f.ReadAt(p, pos-seg); err != nil {
		return fmt.Errorf("reading the journal at %d: %w", pos, err)
	}
	return nil
}
