//go:build !cgo

package chunk

import "runtime"

func newFrames(level Level, maxChunk int) (frameCodec, error) {
	return newGoFrames(level, maxChunk, uint64(maxChunk)+1<<16, runtime.GOMAXPROCS(0))
}
