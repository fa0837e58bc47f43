// Package directio writes large ranges of files around the page cache
// (O_DIRECT), for the two places where lifeboat writes far more data than
// anything will read back soon: pack files of a directory vault and restored
// disk images.
//
// Buffered writes of gigabytes cost a copy into the page cache, then
// writeback, dirty-page throttling and the eviction of everything else the
// machine had cached; on the benchmark machine they also cost most of the
// system time of a backup or restore, and made it vary by a factor of five
// from run to run (bench/RESULTS.md). Direct writes go from lifeboat's
// buffers to the device.
//
// O_DIRECT needs the file offset, the length and the memory to be aligned
// to the device's logical block size. A Writer sends the aligned part of
// each write directly and the rest through the page cache, and falls back
// to buffered writes for good where the file system refuses O_DIRECT
// (EINVAL): the data written is the same either way, only the path differs.
// Callers still fsync: direct writes skip the page cache, not the device's
// volatile cache or the file system's metadata.
package directio

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the alignment Writer uses for direct writes: 4096 covers the
// logical block sizes of disks in use (512 and 4096 bytes).
const Align = 4096

// Alloc returns a zeroed buffer of n bytes whose memory starts at a
// multiple of Align.
func Alloc(n int) []byte {
	b := make([]byte, n+Align)
	skip := Align - int(uintptr(unsafe.Pointer(&b[0]))%Align)
	if skip == Align {
		skip = 0
	}
	return b[skip : skip+n : skip+n]
}

// Aligned reports whether p's memory starts at a multiple of Align.
func Aligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%Align == 0
}

// Writer writes to one file, directly where it can. It is safe for
// concurrent use by writers of disjoint ranges.
type Writer struct {
	f        *os.File // buffered
	d        *os.File // the same file opened with O_DIRECT; nil if refused
	disabled atomic.Bool
	direct   atomic.Int64
}

// NewWriter returns a Writer for f, which stays the caller's to close. It
// opens a second descriptor of the same file with O_DIRECT; where that is
// refused, every write goes through f.
func NewWriter(f *os.File) *Writer {
	w := &Writer{f: f}
	d, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|unix.O_DIRECT, 0)
	if err == nil {
		w.d = d
	}
	return w
}

// Close closes the direct descriptor (not the file given to NewWriter).
func (w *Writer) Close() error {
	if w.d == nil {
		return nil
	}
	return w.d.Close()
}

// Direct reports how many bytes went around the page cache.
func (w *Writer) Direct() int64 { return w.direct.Load() }

// WriteAt writes p at off: the largest aligned prefix directly when off and
// p's memory are aligned, the rest buffered.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	n := len(p) &^ (Align - 1)
	if w.d == nil || w.disabled.Load() || n == 0 || off%Align != 0 || !Aligned(p) {
		return w.f.WriteAt(p, off)
	}
	done, err := w.d.WriteAt(p[:n], off)
	if err != nil {
		if done == 0 && errors.Is(err, unix.EINVAL) {
			// The file system or device wants a larger alignment or no
			// O_DIRECT at all: buffered from now on.
			w.disabled.Store(true)
			return w.f.WriteAt(p, off)
		}
		return done, err
	}
	w.direct.Add(int64(done))
	if n == len(p) {
		return n, nil
	}
	m, err := w.f.WriteAt(p[n:], off+int64(n))
	return n + m, err
}
