package mount

import (
	"context"
	"errors"
	"io"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"lifeboat/internal/pointdisk"
)

// rootNode is the directory of the disk files.
type rootNode struct {
	fs.Inode
	disks []*pointdisk.Disk
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

func (r *rootNode) OnAdd(ctx context.Context) {
	for _, d := range r.disks {
		ch := r.NewPersistentInode(ctx, &diskNode{d: d}, fs.StableAttr{Mode: syscall.S_IFREG})
		r.AddChild(d.Name(), ch, false)
	}
}

// diskNode is one disk as a read-only file.
type diskNode struct {
	fs.Inode
	d *pointdisk.Disk
}

var (
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeOpener    = (*diskNode)(nil)
	_ fs.NodeReader    = (*diskNode)(nil)
)

func (n *diskNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o444
	out.Size = uint64(n.d.Size())
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	return 0
}

func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	// The point never changes: the kernel may keep what it read.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read reads from the vault; a block that cannot be read is EIO (the
// disk's Warn names the object), never wrong bytes.
func (n *diskNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k, err := n.d.ReadAtContext(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}
