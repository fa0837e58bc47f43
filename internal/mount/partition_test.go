package mount

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
)

const mib = 1 << 20

// disk builds an image of size bytes with the given writes.
func disk(size int, writes map[int][]byte) *bytes.Reader {
	b := make([]byte, size)
	for off, w := range writes {
		copy(b[off:], w)
	}
	return bytes.NewReader(b)
}

func mbr(entries ...[3]uint32) []byte { // type, first LBA, sectors
	b := make([]byte, 512)
	for i, e := range entries {
		p := b[446+16*i:]
		p[4] = byte(e[0])
		binary.LittleEndian.PutUint32(p[8:], e[1])
		binary.LittleEndian.PutUint32(p[12:], e[2])
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

func gptHeader(entriesLBA uint64, n, size uint32) []byte {
	b := make([]byte, 92)
	copy(b, "EFI PART")
	binary.LittleEndian.PutUint64(b[72:], entriesLBA)
	binary.LittleEndian.PutUint32(b[80:], n)
	binary.LittleEndian.PutUint32(b[84:], size)
	return b
}

func gptEntry(first, last uint64) []byte {
	b := make([]byte, 128)
	b[0] = 1 // a type GUID that is not all zeros
	binary.LittleEndian.PutUint64(b[32:], first)
	binary.LittleEndian.PutUint64(b[40:], last)
	return b
}

var ext4Magic = []byte{0x53, 0xef}

func TestPartitions(t *testing.T) {
	entries := append(gptEntry(2048, 4095), append(make([]byte, 128), gptEntry(4096, 8191)...)...)
	tests := []struct {
		name string
		disk *bytes.Reader
		want string // Name:Offset:Length:FS ...
		err  string
	}{
		{name: "whole-disk ext4", disk: disk(8*mib, map[int][]byte{1080: ext4Magic}), want: "disk:0:8388608:ext4"},
		{name: "blank", disk: disk(mib, nil), want: "disk:0:1048576:"},
		{name: "MBR, one ext4, one unknown, an extended one skipped",
			disk: disk(8*mib, map[int][]byte{0: mbr([3]uint32{0x83, 2048, 4096}, [3]uint32{0x05, 6144, 1024}, [3]uint32{0x83, 8192, 8192}),
				2048*512 + 1080: ext4Magic}),
			want: "part1:1048576:2097152:ext4 part3:4194304:4194304:"},
		{name: "GPT with xfs and ext4, an unused entry between",
			disk: disk(8*mib, map[int][]byte{0: mbr([3]uint32{0xee, 1, 16383}), 512: gptHeader(2, 3, 128), 1024: entries,
				2048 * 512: []byte("XFSB"), 4096*512 + 1080: ext4Magic}),
			want: "part1:1048576:1048576:xfs part3:2097152:2097152:ext4"},
		{name: "MBR entry past the end", disk: disk(mib, map[int][]byte{0: mbr([3]uint32{0x83, 2048, 4096})}), err: "outside"},
		{name: "GPT entry past the end",
			disk: disk(2*mib, map[int][]byte{0: mbr([3]uint32{0xee, 1, 4095}), 512: gptHeader(2, 3, 128), 1024: entries}), err: "outside"},
		{name: "GPT table too big", disk: disk(mib, map[int][]byte{0: mbr([3]uint32{0xee, 1, 2047}), 512: gptHeader(2, 1<<20, 128)}), err: "do not fit"},
		{name: "protective MBR without GPT", disk: disk(mib, map[int][]byte{0: mbr([3]uint32{0xee, 1, 2047})}), err: "no GPT header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := Partitions(tc.disk, tc.disk.Size())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range parts {
				got = append(got, strings.Join([]string{p.Name(), itoa(p.Offset), itoa(p.Length), p.FS}, ":"))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("got %s, want %s", g, tc.want)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
