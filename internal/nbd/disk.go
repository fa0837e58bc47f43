package nbd

import (
	"context"
	"fmt"

	"lifeboat/internal/source"
)

// Disk is an NBD export read as a backup source (a source.Disk). It asks
// for base:allocation, so DataExtents knows the holes, and for whatever
// dirty bitmaps the options name.
type Disk struct {
	c   *Client
	uri string
}

var _ source.Disk = (*Disk)(nil)

// OpenDisk connects to the export named by an NBD URI. Pass
// WithMetaContexts(DirtyBitmapContext("b0")) to read a QEMU dirty bitmap
// with DirtyExtents.
func OpenDisk(ctx context.Context, rawURL string, opts ...Option) (*Disk, error) {
	c, err := Dial(ctx, rawURL, append([]Option{WithMetaContexts(ContextBaseAllocation)}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &Disk{c: c, uri: rawURL}, nil
}

// NewDisk makes a Disk of a connected client, named source in messages.
// The Disk owns the client.
func NewDisk(c *Client, source string) *Disk { return &Disk{c: c, uri: source} }

// DirtyBitmapContext is the metadata context of QEMU's dirty bitmap name.
func DirtyBitmapContext(bitmap string) string { return ContextDirtyBitmapPrefix + bitmap }

// Client returns the disk's connection.
func (d *Disk) Client() *Client { return d.c }

// ReadAt reads from the export; it is safe for concurrent use.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) { return d.c.ReadAt(p, off) }

// ReadAtContext is ReadAt, returning once ctx ends: a backup that is
// cancelled does not wait on a stalled export.
func (d *Disk) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return d.c.ReadAtContext(ctx, p, off)
}

// Size is the export's size in bytes.
func (d *Disk) Size() int64 { return d.c.Size() }

// Source names the disk: its NBD URI.
func (d *Disk) Source() string { return d.uri }

// Close disconnects.
func (d *Disk) Close() error { return d.c.Close() }

// DataExtents returns the extents base:allocation does not report as a
// hole or as reading zeros, merged where adjacent. ok is false when the
// server did not offer base:allocation.
func (d *Disk) DataExtents(ctx context.Context) ([]source.Extent, bool, error) {
	if !d.c.HasMetaContext(ContextBaseAllocation) || d.c.Size() == 0 {
		return nil, d.c.HasMetaContext(ContextBaseAllocation), nil
	}
	exts, err := d.c.BlockStatus(ctx, ContextBaseAllocation, 0, d.c.Size())
	if err != nil {
		return nil, false, fmt.Errorf("disk %s: allocation map: %w", d.uri, err)
	}
	return selectExtents(exts, func(f uint32) bool { return f&(StateHole|StateZero) == 0 }), true, nil
}

// DirtyExtents returns the extents QEMU's dirty bitmap marks dirty,
// merged where adjacent. The bitmap's context must have been negotiated
// (WithMetaContexts(DirtyBitmapContext(bitmap))).
func (d *Disk) DirtyExtents(ctx context.Context, bitmap string) ([]source.Extent, error) {
	name := DirtyBitmapContext(bitmap)
	if !d.c.HasMetaContext(name) {
		return nil, fmt.Errorf("disk %s: dirty bitmap %q is not available: the server did not agree to metadata context %q (agreed: %q)",
			d.uri, bitmap, name, d.c.MetaContexts())
	}
	if d.c.Size() == 0 {
		return nil, nil
	}
	exts, err := d.c.BlockStatus(ctx, name, 0, d.c.Size())
	if err != nil {
		return nil, fmt.Errorf("disk %s: dirty bitmap %q: %w", d.uri, bitmap, err)
	}
	return selectExtents(exts, func(f uint32) bool { return f&StateDirty != 0 }), nil
}

// selectExtents keeps the extents whose flags match, merging neighbours.
func selectExtents(exts []Extent, keep func(uint32) bool) []source.Extent {
	var out []source.Extent
	for _, e := range exts {
		if !keep(e.Flags) {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == e.Offset {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, source.Extent{Offset: e.Offset, Length: e.Length})
	}
	return out
}
