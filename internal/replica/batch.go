package replica

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"
)

// A batch is what one replication cycle sends: every write of every disk of
// a machine between the previous consistent cut and this one, as the
// extents' contents at the cut. It is applied as a whole or not at all.
// The byte layout is in docs/replication.md ("Batch").

// batchMagic starts every batch.
var batchMagic = [8]byte{'L', 'B', 'R', 'B', 'A', 'T', '0', '1'}

// Record types.
const (
	recData  = 1 // disk u32, off u64, len u64, then len bytes
	recZero  = 2 // disk u32, off u64, len u64: the range reads as zeros
	recEnd   = 0xff
	recHdrSz = 1 + 4 + 8 + 8
)

// MaxRecord bounds the payload of one data record.
const MaxRecord = 4 << 20

// ErrTorn is returned for a batch that ends before its trailer or whose
// checksum does not match: it was cut short (a killed sender or receiver)
// and must be discarded.
var ErrTorn = errors.New("batch is torn or corrupt")

// Header is a batch's header.
type Header struct {
	Seq uint64 `json:"seq"`
	// Cut is the source's time of the consistent cut the batch ends at.
	Cut time.Time `json:"cut"`
	// Consistency is "crash", or "app" when the guest was quiesced.
	Consistency string `json:"consistency"`
	// Full says the batch holds every disk's whole content (initial sync
	// or resync): extents it does not name read as zeros.
	Full bool `json:"full,omitempty"`
	// Group and GroupCut: the cut is one machine's share of a replication
	// group's consistent cut, GroupCut (its instant, in Unix nanoseconds),
	// which every member's batch of that cut carries.
	Group    string `json:"group,omitempty"`
	GroupCut int64  `json:"group_cut,omitempty"`
}

// BatchWriter encodes a batch. Close writes the trailer.
type BatchWriter struct {
	out io.Writer
	w   *bufio.Writer
	crc hash.Hash32
	err error
	buf [recHdrSz]byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewBatchWriter writes the magic and h to w.
func NewBatchWriter(w io.Writer, h Header) (*BatchWriter, error) {
	bw := &BatchWriter{out: w, crc: crc32.New(castagnoli)}
	bw.w = bufio.NewWriterSize(io.MultiWriter(w, bw.crc), 1<<20)
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(js)))
	bw.write(batchMagic[:])
	bw.write(n[:])
	bw.write(js)
	return bw, bw.err
}

func (bw *BatchWriter) write(p []byte) {
	if bw.err == nil {
		_, bw.err = bw.w.Write(p)
	}
}

func (bw *BatchWriter) record(typ byte, disk int, off, length int64) {
	b := bw.buf[:]
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(disk))
	binary.BigEndian.PutUint64(b[5:], uint64(off))
	binary.BigEndian.PutUint64(b[13:], uint64(length))
	bw.write(b)
}

// Data adds the content p of disk at off; all-zero content is sent as a
// zero record.
func (bw *BatchWriter) Data(disk int, off int64, p []byte) error {
	if len(p) > MaxRecord {
		return fmt.Errorf("record of %d bytes: more than %d", len(p), MaxRecord)
	}
	if allZero(p) {
		return bw.Zero(disk, off, int64(len(p)))
	}
	bw.record(recData, disk, off, int64(len(p)))
	bw.write(p)
	return bw.err
}

// Zero says length bytes of disk at off read as zeros.
func (bw *BatchWriter) Zero(disk int, off, length int64) error {
	bw.record(recZero, disk, off, length)
	return bw.err
}

// Close writes the end record and the checksum of everything before it.
func (bw *BatchWriter) Close() error {
	bw.write([]byte{recEnd})
	if bw.err != nil {
		return bw.err
	}
	if err := bw.w.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], bw.crc.Sum32())
	_, err := bw.out.Write(sum[:])
	return err
}

func allZero(p []byte) bool {
	for len(p) >= 8 {
		if binary.LittleEndian.Uint64(p) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// Record is one record of a batch as read back: its payload lies at
// FileOff in the batch file (Data) or it reads as zeros (Zero).
type Record struct {
	Disk    int
	Off     int64
	Len     int64
	Zero    bool
	FileOff int64
}

// ReadHeader reads only a batch's header (its records and checksum are
// checked when the batch is applied, by ReadBatch).
func ReadHeader(r io.Reader) (Header, error) {
	var h Header
	var head [12]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrTorn, err)
	}
	if !bytes.Equal(head[:8], batchMagic[:]) {
		return h, fmt.Errorf("%w: magic %q", ErrTorn, head[:8])
	}
	n := binary.BigEndian.Uint32(head[8:])
	if n > 1<<20 {
		return h, fmt.Errorf("%w: header length %d", ErrTorn, n)
	}
	js, err := readN(r, n)
	if err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrTorn, err)
	}
	if err := json.Unmarshal(js, &h); err != nil {
		return h, fmt.Errorf("%w: header: %v", ErrTorn, err)
	}
	return h, nil
}

// ReadBatch reads and checks a whole batch from r: its header and its
// records (without payloads). A batch cut short or failing its checksum
// is ErrTorn.
func ReadBatch(r io.Reader) (Header, []Record, error) {
	crc := crc32.New(castagnoli)
	cr := &countReader{r: bufio.NewReaderSize(r, 1<<20), h: crc}
	var h Header
	torn := func(what string, err error) (Header, []Record, error) {
		if err == nil {
			err = errors.New("malformed")
		}
		return h, nil, fmt.Errorf("%w: %s: %v", ErrTorn, what, err)
	}
	var head [12]byte
	if _, err := io.ReadFull(cr, head[:]); err != nil {
		return torn("header", err)
	}
	if !bytes.Equal(head[:8], batchMagic[:]) {
		return torn("magic", fmt.Errorf("%q", head[:8]))
	}
	n := binary.BigEndian.Uint32(head[8:])
	if n > 1<<20 {
		return torn("header length", fmt.Errorf("%d", n))
	}
	js, err := readN(cr, n)
	if err != nil {
		return torn("header", err)
	}
	if err := json.Unmarshal(js, &h); err != nil {
		return torn("header", err)
	}
	var recs []Record
	var b [recHdrSz]byte
	for {
		if _, err := io.ReadFull(cr, b[:1]); err != nil {
			return torn("record", err)
		}
		if b[0] == recEnd {
			break
		}
		if _, err := io.ReadFull(cr, b[1:]); err != nil {
			return torn("record", err)
		}
		rec := Record{Disk: int(binary.BigEndian.Uint32(b[1:])), Off: int64(binary.BigEndian.Uint64(b[5:])),
			Len: int64(binary.BigEndian.Uint64(b[13:]))}
		switch {
		case rec.Off < 0 || rec.Len < 0:
			return torn("record", fmt.Errorf("negative range"))
		case b[0] == recZero:
			rec.Zero = true
		case b[0] == recData:
			if rec.Len > MaxRecord {
				return torn("record", fmt.Errorf("%d bytes", rec.Len))
			}
			rec.FileOff = cr.n
			if _, err := io.CopyN(io.Discard, cr, rec.Len); err != nil {
				return torn("record payload", err)
			}
		default:
			return torn("record type", fmt.Errorf("%d", b[0]))
		}
		recs = append(recs, rec)
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr, sum[:]); err != nil {
		return torn("checksum", err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return torn("checksum", fmt.Errorf("%08x, want %08x", got, want))
	}
	if _, err := cr.Read(b[:1]); err != io.EOF {
		return torn("trailer", errors.New("data after the checksum"))
	}
	return h, recs, nil
}

// readN reads exactly n bytes, allocating as they come rather than the n a
// length field claims: a header of 12 bytes saying 1 MiB costs what it
// holds.
func readN(r io.Reader, n uint32) ([]byte, error) {
	var b bytes.Buffer
	if _, err := io.CopyN(&b, r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b.Bytes(), nil
}

// countReader counts and hashes what it returns.
type countReader struct {
	r io.Reader
	h hash.Hash32
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}
