package indexcache

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"

	"lifeboat/internal/chunk"
)

// A segment file holds the entries of some index objects, sorted by chunk
// ID, followed by its head and a footer (docs/indexcache.md):
//
//	entries  n × 48: chunk ID, pack slot u32, offset u32, length u32, raw length u32
//	head     "LBXH" 1 0 0 0, generation u64, objects u32, pack slots u32, entries u64,
//	         bucket bits u32, bloom words u32,
//	         objects × 32 (index object IDs), slots × (pack ID 32, object u32),
//	         bloom words × 8, (2^bits + 1) × u32 bucket starts,
//	         2^bits × 16 bucket sums (BLAKE3 of the bucket's entries),
//	         MAC 32 = keyed-BLAKE3(cache key, vault ID ‖ head without MAC)
//	footer   head offset u64, head length u32, "LBXC"
//
// The head is read and authenticated when the segment is opened; a bucket
// (the entries whose IDs share their first bits) is read and checked
// against its sum when a lookup needs it. So a run reads the head (about 2
// bytes per chunk) and the buckets it looks in, not the whole index.

const (
	entrySize  = 48
	footerSize = 16
	headFixed  = 8 + 8 + 4 + 4 + 8 + 4 + 4
	sumSize    = 16
	bloomK     = 7
	// maxHead bounds a head read from disk (about 4 bytes per chunk, so
	// some 250 M chunks), maxBucket a bucket: both only guard against a
	// damaged file, whose MAC then fails anyway.
	maxHead   = 1 << 30
	maxBucket = 1 << 20
)

// rec is one entry: where one copy of a chunk is.
type rec struct {
	id                  chunk.ID
	slot                uint32
	off, length, rawLen uint32
}

func (r *rec) put(b []byte) {
	copy(b, r.id[:])
	binary.LittleEndian.PutUint32(b[32:], r.slot)
	binary.LittleEndian.PutUint32(b[36:], r.off)
	binary.LittleEndian.PutUint32(b[40:], r.length)
	binary.LittleEndian.PutUint32(b[44:], r.rawLen)
}

func getRec(b []byte) rec {
	var r rec
	copy(r.id[:], b)
	r.slot = binary.LittleEndian.Uint32(b[32:])
	r.off = binary.LittleEndian.Uint32(b[36:])
	r.length = binary.LittleEndian.Uint32(b[40:])
	r.rawLen = binary.LittleEndian.Uint32(b[44:])
	return r
}

// slot is one pack as named by one index object.
type slot struct {
	pack chunk.ID
	obj  uint32
}

// bucketBits chooses about 64 entries a bucket.
func bucketBits(n uint64) uint32 {
	b := uint32(bits.Len64(n / 64))
	return min(max(b, 4), 24)
}

func bucketOf(id *chunk.ID, bits uint32) uint32 {
	return binary.BigEndian.Uint32(id[:4]) >> (32 - bits)
}

// bloom positions come from ID bytes the bucket does not use.
func bloomHashes(id *chunk.ID) (uint64, uint64) {
	return binary.LittleEndian.Uint64(id[16:]), binary.LittleEndian.Uint64(id[24:]) | 1
}

func bloomHas(words []uint64, id *chunk.ID) bool {
	m := uint64(len(words)) * 64
	h1, h2 := bloomHashes(id)
	for i := uint64(0); i < bloomK; i++ {
		p := (h1 + i*h2) % m
		if words[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

func bloomAdd(words []uint64, id *chunk.ID) {
	m := uint64(len(words)) * 64
	h1, h2 := bloomHashes(id)
	for i := uint64(0); i < bloomK; i++ {
		p := (h1 + i*h2) % m
		words[p/64] |= 1 << (p % 64)
	}
}

func bucketSum(b []byte) [sumSize]byte {
	s := blake3.Sum256(b)
	return [sumSize]byte(s[:sumSize])
}

// writer streams sorted entries into a new segment file.
type writer struct {
	f      *os.File
	w      *bufio.Writer
	key    [32]byte
	vault  string
	gen    uint64
	objs   []chunk.ID
	slots  []slot
	bits   uint32
	bloom  []uint64
	starts []uint32
	sums   [][sumSize]byte
	n      uint64
	cur    int64 // bucket being written, -1 before the first
	h      *blake3.Hasher
	last   chunk.ID
	buf    [entrySize]byte
}

// newWriter starts a segment at path of at most max entries, naming objs
// and slots.
func newWriter(path string, key [32]byte, vaultID string, gen uint64, max uint64, objs []chunk.ID, slots []slot) (*writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	b := bucketBits(max)
	w := &writer{f: f, w: bufio.NewWriterSize(f, 1<<20), key: key, vault: vaultID, gen: gen, objs: objs, slots: slots, bits: b,
		bloom: make([]uint64, (max*10+63)/64+1), starts: make([]uint32, 1<<b+1), sums: make([][sumSize]byte, 1<<b),
		cur: -1, h: blake3.New()}
	return w, nil
}

func (w *writer) endBucket(upTo int64) {
	if w.cur >= 0 {
		copy(w.sums[w.cur][:], w.h.Sum(nil))
	}
	w.h.Reset()
	for b := w.cur + 1; b <= upTo && b < int64(len(w.starts)); b++ {
		w.starts[b] = uint32(w.n)
	}
	for b := w.cur + 1; b < upTo && b < int64(len(w.sums)); b++ {
		w.sums[b] = bucketSum(nil)
	}
	w.cur = upTo
}

// add appends r; entries must come in order of ID.
func (w *writer) add(r rec) error {
	if w.n > 0 && bytes.Compare(r.id[:], w.last[:]) < 0 {
		return errors.New("index cache: entries out of order")
	}
	if w.n >= 1<<32-1 {
		return errors.New("index cache: segment too large")
	}
	if b := int64(bucketOf(&r.id, w.bits)); b != w.cur {
		w.endBucket(b)
	}
	r.put(w.buf[:])
	w.h.Write(w.buf[:])
	if _, err := w.w.Write(w.buf[:]); err != nil {
		return err
	}
	bloomAdd(w.bloom, &r.id)
	w.last = r.id
	w.n++
	return nil
}

func (w *writer) head() []byte {
	h := make([]byte, 0, headFixed+len(w.objs)*32+len(w.slots)*36+len(w.bloom)*8+len(w.starts)*4+len(w.sums)*sumSize+32)
	h = append(h, "LBXH\x01\x00\x00\x00"...)
	h = binary.LittleEndian.AppendUint64(h, w.gen)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(w.objs)))
	h = binary.LittleEndian.AppendUint32(h, uint32(len(w.slots)))
	h = binary.LittleEndian.AppendUint64(h, w.n)
	h = binary.LittleEndian.AppendUint32(h, w.bits)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(w.bloom)))
	for _, o := range w.objs {
		h = append(h, o[:]...)
	}
	for _, s := range w.slots {
		h = append(h, s.pack[:]...)
		h = binary.LittleEndian.AppendUint32(h, s.obj)
	}
	for _, x := range w.bloom {
		h = binary.LittleEndian.AppendUint64(h, x)
	}
	for _, x := range w.starts {
		h = binary.LittleEndian.AppendUint32(h, x)
	}
	for _, s := range w.sums {
		h = append(h, s[:]...)
	}
	return append(h, headMAC(w.key, w.vault, h)...)
}

func headMAC(key [32]byte, vaultID string, head []byte) []byte {
	m, _ := blake3.NewKeyed(key[:])
	m.Write([]byte(vaultID))
	m.Write([]byte{0})
	m.Write(head)
	return m.Sum(nil)
}

// finish writes the head and footer and syncs the file.
func (w *writer) finish() error {
	w.endBucket(int64(len(w.sums)))
	h := w.head()
	var foot [footerSize]byte
	binary.LittleEndian.PutUint64(foot[0:], w.n*entrySize)
	binary.LittleEndian.PutUint32(foot[8:], uint32(len(h)))
	copy(foot[12:], "LBXC")
	if _, err := w.w.Write(h); err != nil {
		return err
	}
	if _, err := w.w.Write(foot[:]); err != nil {
		return err
	}
	if err := w.w.Flush(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	return w.f.Close()
}

func (w *writer) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// segment is an open, authenticated segment file.
type segment struct {
	f      *os.File
	path   string
	gen    uint64
	n      uint64
	objs   []chunk.ID
	slots  []slot
	bits   uint32
	bloom  []uint64
	starts []uint32
	sums   []byte
	size   int64

	usable []bool // per slot: its object is listed, its pack not skipped

	broken atomic.Bool // a bucket failed its check or could not be read
	refill sync.Once   // loads the objects of a broken segment into memory
}

var errDamaged = errors.New("index cache segment damaged or not this vault's")

// openSegment opens and authenticates a segment file.
func openSegment(path string, key [32]byte, vaultID string) (*segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	s, err := readHead(f, key, vaultID)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.path = path
	return s, nil
}

func readHead(f *os.File, key [32]byte, vaultID string) (*segment, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < footerSize {
		return nil, fmt.Errorf("%w: %d bytes", errDamaged, size)
	}
	var foot [footerSize]byte
	if _, err := f.ReadAt(foot[:], size-footerSize); err != nil {
		return nil, err
	}
	headOff := binary.LittleEndian.Uint64(foot[0:])
	headLen := uint64(binary.LittleEndian.Uint32(foot[8:]))
	// headOff is checked against the size before any sum, so that no
	// value of it can wrap around.
	if string(foot[12:]) != "LBXC" || headLen < headFixed+32 || headLen > maxHead || headOff%entrySize != 0 ||
		headOff > uint64(size) || headOff+headLen+footerSize != uint64(size) {
		return nil, fmt.Errorf("%w: bad footer", errDamaged)
	}
	h := make([]byte, headLen)
	if _, err := f.ReadAt(h, int64(headOff)); err != nil {
		return nil, err
	}
	body, mac := h[:len(h)-32], h[len(h)-32:]
	if subtle.ConstantTimeCompare(mac, headMAC(key, vaultID, body)) != 1 {
		return nil, fmt.Errorf("%w: MAC does not match", errDamaged)
	}
	// Authenticated: what follows was written by this code for this
	// vault, so the checks below only catch our own bugs.
	if string(body[:8]) != "LBXH\x01\x00\x00\x00" {
		return nil, fmt.Errorf("%w: unknown version", errDamaged)
	}
	s := &segment{f: f, size: size}
	s.gen = binary.LittleEndian.Uint64(body[8:])
	nObjs := uint64(binary.LittleEndian.Uint32(body[16:]))
	nSlots := uint64(binary.LittleEndian.Uint32(body[20:]))
	s.n = binary.LittleEndian.Uint64(body[24:])
	s.bits = binary.LittleEndian.Uint32(body[32:])
	nBloom := uint64(binary.LittleEndian.Uint32(body[36:]))
	if s.bits < 4 || s.bits > 24 || nBloom == 0 || s.n*entrySize != headOff ||
		uint64(len(body)) != headFixed+nObjs*32+nSlots*36+nBloom*8+(1<<s.bits+1)*4+(1<<s.bits)*sumSize {
		return nil, fmt.Errorf("%w: inconsistent head", errDamaged)
	}
	p := body[headFixed:]
	s.objs = make([]chunk.ID, nObjs)
	for i := range s.objs {
		copy(s.objs[i][:], p)
		p = p[32:]
	}
	s.slots = make([]slot, nSlots)
	for i := range s.slots {
		copy(s.slots[i].pack[:], p)
		s.slots[i].obj = binary.LittleEndian.Uint32(p[32:])
		if uint64(s.slots[i].obj) >= nObjs {
			return nil, fmt.Errorf("%w: slot names object %d of %d", errDamaged, s.slots[i].obj, nObjs)
		}
		p = p[36:]
	}
	s.bloom = make([]uint64, nBloom)
	for i := range s.bloom {
		s.bloom[i] = binary.LittleEndian.Uint64(p)
		p = p[8:]
	}
	s.starts = make([]uint32, 1<<s.bits+1)
	for i := range s.starts {
		s.starts[i] = binary.LittleEndian.Uint32(p)
		p = p[4:]
		if i > 0 && s.starts[i] < s.starts[i-1] {
			return nil, fmt.Errorf("%w: bucket starts out of order", errDamaged)
		}
	}
	if s.starts[0] != 0 || uint64(s.starts[len(s.starts)-1]) != s.n {
		return nil, fmt.Errorf("%w: bucket starts do not cover the entries", errDamaged)
	}
	s.sums = p
	return s, nil
}

func (s *segment) close() { s.f.Close() }

var bucketBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64*entrySize); return &b }}

// bucket reads bucket b, checks it and calls fn with its bytes.
func (s *segment) bucket(b uint32, fn func([]byte)) error {
	lo, hi := uint64(s.starts[b]), uint64(s.starts[b+1])
	if lo == hi {
		return nil
	}
	if hi-lo > maxBucket {
		return fmt.Errorf("%s: %w: bucket of %d entries", s.path, errDamaged, hi-lo)
	}
	bp := bucketBufs.Get().(*[]byte)
	defer bucketBufs.Put(bp)
	need := int((hi - lo) * entrySize)
	if cap(*bp) < need {
		*bp = make([]byte, need)
	}
	buf := (*bp)[:need]
	if _, err := s.f.ReadAt(buf, int64(lo*entrySize)); err != nil {
		return fmt.Errorf("reading %s: %w", s.path, err)
	}
	if sum := bucketSum(buf); !bytes.Equal(sum[:], s.sums[b*sumSize:(b+1)*sumSize]) {
		return fmt.Errorf("%s: %w: bucket %d does not match its sum", s.path, errDamaged, b)
	}
	fn(buf)
	return nil
}

var errBroken = errors.New("index cache segment found damaged earlier")

// lookup calls fn for every usable entry of id. It reads nothing when the
// bloom filter says id is surely not here. Once a bucket failed, every
// lookup fails (the caller then looks elsewhere).
func (s *segment) lookup(id *chunk.ID, fn func(r rec)) error {
	if s.broken.Load() {
		return fmt.Errorf("%s: %w", s.path, errBroken)
	}
	if !bloomHas(s.bloom, id) {
		return nil
	}
	b := bucketOf(id, s.bits)
	err := s.bucket(b, func(buf []byte) {
		n := len(buf) / entrySize
		i, j := 0, n // first entry >= id
		for i < j {
			h := (i + j) / 2
			if bytes.Compare(buf[h*entrySize:h*entrySize+32], id[:]) < 0 {
				i = h + 1
			} else {
				j = h
			}
		}
		for ; i < n && bytes.Equal(buf[i*entrySize:i*entrySize+32], id[:]); i++ {
			r := getRec(buf[i*entrySize:])
			if int(r.slot) < len(s.usable) && s.usable[r.slot] {
				fn(r)
			}
		}
	})
	if err != nil {
		s.broken.Store(true)
	}
	return err
}

// scan reads every entry in order, checking each bucket, for a merge.
type scan struct {
	s   *segment
	b   uint32
	buf []byte
	r   *bufio.Reader
	cur rec
	ok  bool
	err error
}

func (s *segment) scan() *scan {
	sc := &scan{s: s, r: bufio.NewReaderSize(io.NewSectionReader(s.f, 0, int64(s.n*entrySize)), 1<<20)}
	sc.next()
	return sc
}

// next moves to the next entry; ok is false at the end or on error.
func (sc *scan) next() {
	s := sc.s
	for len(sc.buf) == 0 {
		if sc.b >= uint32(len(s.starts)-1) {
			sc.ok = false
			return
		}
		b := sc.b
		sc.b++
		cnt := uint64(s.starts[b+1] - s.starts[b])
		if cnt == 0 {
			continue
		}
		if cnt > maxBucket {
			sc.ok, sc.err = false, fmt.Errorf("%s: %w: bucket of %d entries", s.path, errDamaged, cnt)
			return
		}
		buf := make([]byte, cnt*entrySize)
		if _, err := io.ReadFull(sc.r, buf); err != nil {
			sc.ok, sc.err = false, fmt.Errorf("reading %s: %w", s.path, err)
			return
		}
		if sum := bucketSum(buf); !bytes.Equal(sum[:], s.sums[b*sumSize:(b+1)*sumSize]) {
			sc.ok, sc.err = false, fmt.Errorf("%s: %w: bucket %d does not match its sum", s.path, errDamaged, b)
			return
		}
		sc.buf = buf
	}
	sc.cur = getRec(sc.buf)
	sc.buf = sc.buf[entrySize:]
	sc.ok = true
}
