package chunk

import (
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Level is a compression level for NewCodec.
type Level int

// Compression levels, named for the vault's "compression" setting. The
// numbers are zstd's own levels; the pure-Go encoder maps them to its nearest
// speed setting.
const (
	LevelFastest Level = 1 // "zstd-fastest"
	LevelDefault Level = 3 // "zstd"
	LevelBetter  Level = 7 // "zstd-better"
)

// frameCodec compresses chunk payloads into single zstd frames (RFC 8878)
// and back. Every implementation reads every other's frames: the choice of
// implementation is not part of the vault format.
type frameCodec interface {
	// compress appends the zstd frame of src to dst. ok is false if src
	// could not be compressed (the caller stores it raw).
	compress(dst, src []byte) (out []byte, ok bool)
	// decompress decodes frame into dst[:0], growing it as needed; more
	// than limit bytes of output is an error.
	decompress(dst, frame []byte, limit int) ([]byte, error)
}

// goFrames is the pure-Go zstd implementation (klauspost/compress). It is
// the only one in a build without cgo, and is always used for metadata.
type goFrames struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// newGoFrames returns a pure-Go codec whose encoder uses a window of
// maxChunk bytes and whose decoder refuses frames of more than maxOut bytes,
// decoding up to decoders frames at once.
func newGoFrames(level Level, maxChunk int, maxOut uint64, decoders int) (*goFrames, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(goLevel(level)),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false), zstd.WithWindowSize(windowFor(maxChunk)))
	if err != nil {
		return nil, fmt.Errorf("creating compressor: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(decoders),
		zstd.WithDecoderMaxMemory(maxOut), zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, fmt.Errorf("creating decompressor: %w", err)
	}
	return &goFrames{enc: enc, dec: dec}, nil
}

func goLevel(l Level) zstd.EncoderLevel {
	switch {
	case l <= LevelFastest:
		return zstd.SpeedFastest
	case l <= LevelDefault:
		return zstd.SpeedDefault
	default:
		return zstd.SpeedBetterCompression
	}
}

func windowFor(n int) int {
	w := zstd.MinWindowSize
	for w < n && w < zstd.MaxWindowSize {
		w <<= 1
	}
	return w
}

func (g *goFrames) compress(dst, src []byte) ([]byte, bool) {
	return g.enc.EncodeAll(src, dst), true
}

func (g *goFrames) decompress(dst, frame []byte, limit int) ([]byte, error) {
	out, err := g.dec.DecodeAll(frame, dst[:0])
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("frame decodes to %d bytes, more than %d", len(out), limit)
	}
	return out, nil
}

// decodeAllMax decodes frames into a new slice, failing as soon as the
// output passes max bytes (or the largest window lifeboat's encoders use,
// 8 MiB, which the decoder needs to accept the frame) rather than after
// decoding it all, and then holding it to max exactly.
func decodeAllMax(frames []byte, limit uint64) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(max(limit, 8<<20)),
		zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, fmt.Errorf("creating decompressor: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(frames, nil)
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) > limit {
		return nil, fmt.Errorf("decodes to %d bytes, more than %d", len(out), limit)
	}
	return out, nil
}
