package backup

import (
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// maxTrackedBlocks bounds the manifest of a tracked disk cut at the small
// chunk size: 2^22 entries, 128 MiB of chunk IDs (what a 1 TiB disk costs
// at the default chunk size). A larger disk is cut coarser.
const maxTrackedBlocks = 1 << 22

// DiskChunkSize is the chunk size a backup cuts a disk of size bytes at
// (docs/format.md, "Chunk size per disk"):
//
//   - the chunk size of the disk in the parent point, when it has the disk
//     (and that is no larger than the vault's, the most its codec reads):
//     a disk keeps the size it was first stored at, so that its chunks
//     dedup against the parent's and its change tracking stays usable;
//   - for a disk new to the machine whose changes are tracked (a dirty
//     bitmap, a replication journal): the smallest valid chunk size (64
//     KiB, a dirty bitmap's usual granularity) that keeps its manifest to
//     maxTrackedBlocks entries, and never more than the vault's. A guest's
//     scattered small writes then dirty 64 KiB each, not a whole 256 KiB
//     chunk: an incremental reads and seals up to 4× less;
//   - otherwise the vault's chunk size.
func DiskChunkSize(size int64, tracked bool, parent *recovery.Disk, vaultChunk int) int {
	if parent != nil && vault.ValidChunkSize(parent.ChunkSize) == nil && parent.ChunkSize <= vaultChunk {
		return parent.ChunkSize
	}
	if !tracked {
		return vaultChunk
	}
	cs := vault.MinChunkSize
	for cs < vaultChunk && (size+int64(cs)-1)/int64(cs) > maxTrackedBlocks {
		cs *= 2
	}
	return min(cs, vaultChunk)
}
