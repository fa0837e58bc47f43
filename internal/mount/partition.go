package mount

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Partition is a region of a disk that may hold a file system.
type Partition struct {
	// Number is the partition's number in its table (1-based), or 0 for a
	// disk with no partition table.
	Number         int
	Offset, Length int64
	// FS is the file system found there: "ext4" (ext2/3/4), "xfs", or "".
	FS string
}

// Name is the partition's directory name: partN, or "disk" for a disk
// without a partition table.
func (p Partition) Name() string {
	if p.Number == 0 {
		return "disk"
	}
	return fmt.Sprintf("part%d", p.Number)
}

const sector = 512

// Partitions reads the partition table of a disk of size bytes (GPT, or
// MBR primary partitions) and the file system type of each partition. A
// disk without a table is one partition, numbered 0. Entries that lie
// outside the disk are refused: a point's partition table is data, and
// may be anything.
func Partitions(r io.ReaderAt, size int64) ([]Partition, error) {
	mbr := make([]byte, sector)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		if size < sector {
			return fsOf(r, []Partition{{Offset: 0, Length: size}})
		}
		return nil, fmt.Errorf("reading the partition table: %w", err)
	}
	var parts []Partition
	if mbr[510] == 0x55 && mbr[511] == 0xaa {
		protective := false
		for i := 0; i < 4; i++ {
			e := mbr[446+16*i : 446+16*(i+1)]
			typ := e[4]
			start := int64(binary.LittleEndian.Uint32(e[8:])) * sector
			length := int64(binary.LittleEndian.Uint32(e[12:])) * sector
			switch {
			case typ == 0 || length == 0:
				continue
			case typ == 0xee:
				protective = true
				continue
			case typ == 0x05 || typ == 0x0f || typ == 0x85: // extended: logical partitions are not read
				continue
			}
			if start+length > size || start <= 0 {
				return nil, fmt.Errorf("MBR partition %d (%d bytes at %d) lies outside the %d-byte disk", i+1, length, start, size)
			}
			parts = append(parts, Partition{Number: i + 1, Offset: start, Length: length})
		}
		if protective {
			gpt, err := gptPartitions(r, size)
			if err != nil {
				return nil, err
			}
			parts = gpt
		}
	}
	// An ext4 file system made on a whole disk has no 0x55AA at 510, and
	// the boot sector of one may: a disk with a file system at offset 0 is
	// read as one.
	if whole, _ := fsType(r, 0); whole != "" || len(parts) == 0 {
		parts = []Partition{{Offset: 0, Length: size}}
	}
	return fsOf(r, parts)
}

func fsOf(r io.ReaderAt, parts []Partition) ([]Partition, error) {
	for i := range parts {
		fs, err := fsType(r, parts[i].Offset)
		if err != nil {
			return nil, err
		}
		parts[i].FS = fs
	}
	return parts, nil
}

// gptPartitions reads the GPT whose header is at LBA 1.
func gptPartitions(r io.ReaderAt, size int64) ([]Partition, error) {
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, sector); err != nil {
		return nil, fmt.Errorf("reading the GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, fmt.Errorf("a protective MBR but no GPT header at LBA 1")
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
	n := binary.LittleEndian.Uint32(hdr[80:])
	esize := binary.LittleEndian.Uint32(hdr[84:])
	if n > 1024 || esize < 128 || esize > 4096 || entriesLBA*sector+int64(n)*int64(esize) > size {
		return nil, fmt.Errorf("GPT header: %d entries of %d bytes at LBA %d do not fit the %d-byte disk", n, esize, entriesLBA, size)
	}
	table := make([]byte, int(n)*int(esize))
	if _, err := r.ReadAt(table, entriesLBA*sector); err != nil {
		return nil, fmt.Errorf("reading the GPT entries: %w", err)
	}
	var parts []Partition
	for i := 0; i < int(n); i++ {
		e := table[i*int(esize):]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue // unused entry
		}
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		last := int64(binary.LittleEndian.Uint64(e[40:]))
		if first <= 0 || last < first || (last+1)*sector > size {
			return nil, fmt.Errorf("GPT partition %d (LBA %d to %d) lies outside the %d-byte disk", i+1, first, last, size)
		}
		parts = append(parts, Partition{Number: i + 1, Offset: first * sector, Length: (last - first + 1) * sector})
	}
	return parts, nil
}

// fsType recognises the file systems lifeboat mounts by their superblock
// magic: ext2/3/4 (0xEF53 at byte 1080) and XFS ("XFSB" at byte 0).
func fsType(r io.ReaderAt, off int64) (string, error) {
	b := make([]byte, 1082)
	if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
		return "", fmt.Errorf("reading the superblock at %d: %w", off, err)
	}
	switch {
	case b[1080] == 0x53 && b[1081] == 0xef:
		return "ext4", nil
	case string(b[:4]) == "XFSB":
		return "xfs", nil
	}
	return "", nil
}
