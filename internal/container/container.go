// Package container knows disk image container formats — qcow2, vmdk,
// vhdx, vdi, qed and the others QEMU reads — as opposed to raw images and
// block devices, whose bytes are the disk.
//
// A container's own bytes are never the disk its guest sees: clusters may
// be unallocated, compressed, or in a backing file. So lifeboat reads and
// writes containers through QEMU itself: qemu-nbd serves the image (with
// its whole backing chain) on a unix socket in a private temporary
// directory, and lifeboat's NBD client reads the guest's view from it —
// unallocated clusters reported as holes by base:allocation — or writes a
// restored disk into it. The server lives exactly as long as the Export
// that started it (see Export.Close).
package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Formats lifeboat names. Raw is a plain image file or block device.
const (
	Raw   = "raw"
	QCOW2 = "qcow2"
)

// ErrEncrypted means an image is encrypted with a key lifeboat does not have.
var ErrEncrypted = errors.New("image is encrypted")

// Info describes what a disk image file or block device holds.
type Info struct {
	// Format is QEMU's name of the container format ("raw", "qcow2", "vmdk", ...).
	Format string
	// VirtualSize is the size of the disk the guest sees.
	VirtualSize int64
	// Backing lists the backing chain below the image, nearest first.
	Backing []string
	// Files are all the other files reading the image reads: its backing
	// chain, external data files, vmdk extents.
	Files []string
}

// magics are the signatures QEMU probes formats by (block/*.c *_probe),
// at their offsets. Anything else is raw — LUKS too: a LUKS volume on a
// disk is the guest's (or the host's) data, which lifeboat stores as is.
var magics = []struct {
	off    int
	magic  string
	format string
}{
	{0, "QFI\xfb", "qcow2"},
	{0, "QED\x00", "qed"},
	{0, "KDMV", "vmdk"},
	{0, "COWD", "vmdk"},
	{0, "# Disk DescriptorFile", "vmdk"},
	{0, "vhdxfile", "vhdx"},
	{0, "conectix", "vpc"},
	{0, "WithoutFreeSpace", "parallels"},
	{0, "WithouFreSpacExt", "parallels"},
	{0, "Bochs Virtual HD Image", "bochs"},
	{0x40, "\x7f\x10\xda\xbe", "vdi"},
}

// Sniff says which container format r starts with, or Raw.
func Sniff(r io.ReaderAt) (string, error) {
	head := make([]byte, 512)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the image header: %w", err)
	}
	head = head[:n]
	for _, m := range magics {
		if len(head) >= m.off+len(m.magic) && string(head[m.off:m.off+len(m.magic)]) == m.magic {
			if m.format == QCOW2 && len(head) >= 8 && head[7] == 1 && string(head[4:7]) == "\x00\x00\x00" {
				return "qcow", nil // version 1
			}
			return m.format, nil
		}
	}
	return Raw, nil
}

// Probe describes the image at path, of the given format, with
// `qemu-img info --backing-chain` (raw images without QEMU).
func Probe(ctx context.Context, path, format string) (Info, error) {
	if format == Raw {
		f, err := os.Open(path)
		if err != nil {
			return Info{}, fmt.Errorf("opening disk %s: %w", path, err)
		}
		defer f.Close()
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return Info{}, fmt.Errorf("disk %s: size: %w", path, err)
		}
		return Info{Format: Raw, VirtualSize: size}, nil
	}
	return qemuInfo(ctx, path, format)
}

// SniffFile says which container format the file or block device at
// path starts with, or Raw, and whether it is a regular file.
func SniffFile(path string) (format string, regular bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, fmt.Errorf("opening disk %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("disk %s: %w", path, err)
	}
	format, err = Sniff(f)
	if err != nil {
		return "", false, fmt.Errorf("disk %s: %w", path, err)
	}
	return format, st.Mode().IsRegular(), nil
}

// imgInfo is one image of `qemu-img info --output=json --backing-chain`.
type imgInfo struct {
	Filename       string `json:"filename"`
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	Encrypted      bool   `json:"encrypted"`
	FormatSpecific struct {
		Data struct {
			DataFile string `json:"data-file"`
			Extents  []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

func qemuInfo(ctx context.Context, path, format string) (Info, error) {
	// -U (force share): describing an image must work while a running
	// QEMU holds its locks. -f: never let QEMU guess.
	cmd := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--output=json", "--backing-chain", "-f", format, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return Info{}, fmt.Errorf("disk %s is a %s image, which lifeboat reads through QEMU: install qemu-img and qemu-nbd (qemu-utils): %w", path, format, err)
		}
		return Info{}, fmt.Errorf("disk %s: qemu-img info: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	var chain []imgInfo
	if err := json.Unmarshal(out, &chain); err != nil || len(chain) == 0 {
		return Info{}, fmt.Errorf("disk %s: qemu-img info printed what lifeboat cannot read (%v): %.200s", path, err, out)
	}
	in := Info{Format: chain[0].Format, VirtualSize: chain[0].VirtualSize}
	for i, c := range chain {
		if c.Encrypted {
			return Info{}, fmt.Errorf("disk %s: %s in its chain: %w (lifeboat cannot read it without the key)", path, c.Filename, ErrEncrypted)
		}
		if i > 0 {
			in.Backing = append(in.Backing, c.Filename)
			in.Files = append(in.Files, c.Filename)
		}
		if f := c.FormatSpecific.Data.DataFile; f != "" {
			in.Files = append(in.Files, f)
		}
		for _, e := range c.FormatSpecific.Data.Extents {
			if e.Filename != c.Filename {
				in.Files = append(in.Files, e.Filename)
			}
		}
	}
	return in, nil
}

// FormatOfName is the format a file name's extension implies: "raw" or
// "qcow2" for the images lifeboat writes, another QEMU format name for
// one it does not write, "" when the extension says nothing.
func FormatOfName(path string) string {
	switch strings.ToLower(strings.TrimPrefix(filepath.Ext(path), ".")) {
	case "raw", "img":
		return Raw
	case "qcow2", "qcow":
		return QCOW2
	case "vmdk":
		return "vmdk"
	case "vhdx":
		return "vhdx"
	case "vhd":
		return "vpc"
	case "vdi":
		return "vdi"
	case "qed":
		return "qed"
	}
	return ""
}

// Create makes a new, empty image of format at path with a disk of size
// bytes (`qemu-img create`). path must be an empty file the caller has
// just created for it (exclusively, with the mode it wants): qemu-img
// create overwrites what is there. A failure leaves the file to the
// caller.
func Create(ctx context.Context, path, format string, size int64) error {
	cmd := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", format, path, fmt.Sprint(size))
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("creating %s image %s: install qemu-img and qemu-nbd (qemu-utils): %w", format, path, err)
		}
		return fmt.Errorf("creating %s image %s: qemu-img create: %w: %s", format, path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateOverlay makes a new qcow2 image at path of a disk of size bytes
// whose backing is backing (a file name, or a json:{...} block-driver
// description such as an NBD export), read as backingFormat. The backing
// is not opened (qemu-img create -u): it need not be reachable yet.
func CreateOverlay(ctx context.Context, path, backing, backingFormat string, size int64) error {
	cmd := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", QCOW2, "-u", "-b", backing, "-F", backingFormat, path, fmt.Sprint(size))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating overlay %s: qemu-img create: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}
