package qmp

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// DirtyBitmap is a dirty bitmap as reported by query-named-block-nodes.
type DirtyBitmap struct {
	Name        string `json:"name"` // empty for QEMU's internal, anonymous bitmaps
	Granularity uint32 `json:"granularity"`
	Recording   bool   `json:"recording"`
	Persistent  bool   `json:"persistent"`
	// Inconsistent is set on a persistent bitmap that QEMU found marked
	// in-use when it opened the image: QEMU was not shut down cleanly, so
	// the bitmap may have missed writes and must not be trusted.
	Inconsistent bool  `json:"inconsistent"`
	Busy         bool  `json:"busy"`  // in use by an operation (export, job)
	Count        int64 `json:"count"` // dirty bytes
}

// ImageInfo describes an image (query-block and query-named-block-nodes).
type ImageInfo struct {
	Filename        string     `json:"filename"`
	Format          string     `json:"format"`
	VirtualSize     int64      `json:"virtual-size"`
	ActualSize      int64      `json:"actual-size"`
	ClusterSize     int64      `json:"cluster-size"`
	DirtyFlag       bool       `json:"dirty-flag"`
	BackingFilename string     `json:"backing-filename"`
	BackingImage    *ImageInfo `json:"backing-image"`
}

// BlockNode is a block driver node (BlockDeviceInfo in the QMP schema).
type BlockNode struct {
	NodeName     string        `json:"node-name"`
	Driver       string        `json:"drv"`  // qcow2, raw, file, copy-before-write, ...
	File         string        `json:"file"` // the file name of the node's image
	ReadOnly     bool          `json:"ro"`
	BackingFile  string        `json:"backing_file"`
	Image        ImageInfo     `json:"image"`
	DirtyBitmaps []DirtyBitmap `json:"dirty-bitmaps"`
}

// Bitmap returns the named dirty bitmap of the node.
func (n BlockNode) Bitmap(name string) (DirtyBitmap, bool) {
	for _, b := range n.DirtyBitmaps {
		if b.Name == name {
			return b, true
		}
	}
	return DirtyBitmap{}, false
}

// BlockInfo is one block device of a machine (query-block).
type BlockInfo struct {
	Device    string     `json:"device"` // legacy drive id; empty for -blockdev/-device disks
	QDev      string     `json:"qdev"`   // the device's id or QOM path
	Type      string     `json:"type"`
	Removable bool       `json:"removable"`
	Locked    bool       `json:"locked"`
	Inserted  *BlockNode `json:"inserted"` // nil when no medium is inserted
}

// QueryBlock lists the machine's block devices. qemu-storage-daemon has no
// devices and returns none.
func (m *Monitor) QueryBlock(ctx context.Context) ([]BlockInfo, error) {
	var out []BlockInfo
	if err := m.Execute(ctx, "query-block", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// QueryNamedBlockNodes lists every block driver node, including QEMU's
// implicit ones (named "#block<N>"), each with its dirty bitmaps.
func (m *Monitor) QueryNamedBlockNodes(ctx context.Context) ([]BlockNode, error) {
	var out []BlockNode
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Node returns the named node from query-named-block-nodes.
func (m *Monitor) Node(ctx context.Context, name string) (BlockNode, error) {
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return BlockNode{}, err
	}
	for _, n := range nodes {
		if n.NodeName == name {
			return n, nil
		}
	}
	return BlockNode{}, fmt.Errorf("block node %q not found", name)
}

// BlockGraph is the block layer's graph (x-debug-query-block-graph).
type BlockGraph struct {
	Nodes []struct {
		ID   int64  `json:"id"`
		Type string `json:"type"` // block-driver, block-backend, block-job
		Name string `json:"name"`
	} `json:"nodes"`
	Edges []struct {
		Parent int64  `json:"parent"`
		Child  int64  `json:"child"`
		Name   string `json:"name"` // file, backing, root, target, ...
	} `json:"edges"`
}

// QueryBlockGraph returns the block graph. The command is marked x-debug,
// but it has existed unchanged since QEMU 4.0 and is the only query that
// names the parents of a node.
func (m *Monitor) QueryBlockGraph(ctx context.Context) (BlockGraph, error) {
	var g BlockGraph
	err := m.Execute(ctx, "x-debug-query-block-graph", nil, &g)
	return g, err
}

// Disk is one disk of a machine, as the backup engine sees it.
type Disk struct {
	Device   string // query-block device id ("" for -blockdev disks and storage daemons)
	QDev     string // qdev id or QOM path of the device ("" for storage daemons)
	Node     string // the top node holding the guest-visible data: where bitmaps go and what to back up
	Driver   string // format driver of Node (qcow2, raw, ...)
	Filename string // image file name
	Size     int64  // virtual size in bytes
	Bitmaps  []DirtyBitmap
}

// Bitmap returns the named dirty bitmap of the disk.
func (d Disk) Bitmap(name string) (DirtyBitmap, bool) {
	return BlockNode{DirtyBitmaps: d.Bitmaps}.Bitmap(name)
}

// Disks enumerates the machine's disks.
//
// For a machine with devices (qemu-system), they are the devices from
// query-block that have a medium inserted; Node is the inserted node.
//
// A storage daemon has no devices; there the disks are the top nodes: named
// block-driver nodes that are not a child of another named block-driver
// node. Implicit nodes ("#block<N>", e.g. the copy-before-write filter a
// backup job inserts) are looked through, parents that are exports, devices
// or jobs do not count, and lifeboat's own fleecing nodes (FleeceNodePrefix)
// are ignored. So a "--blockdev file,node-name=f --blockdev qcow2,node-name=d,file=f"
// daemon has one disk, d, whether or not it is exported or being fleeced.
func (m *Monitor) Disks(ctx context.Context) ([]Disk, error) {
	devs, err := m.QueryBlock(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	if len(devs) > 0 {
		return DevicesDisks(devs, nodes), nil
	}
	byName := make(map[string]BlockNode, len(nodes))
	for _, n := range nodes {
		byName[n.NodeName] = n
	}
	var disks []Disk
	g, err := m.QueryBlockGraph(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing disks of a machine without devices: %w", err)
	}
	kind := make(map[int64]string, len(g.Nodes))
	name := make(map[int64]string, len(g.Nodes))
	for _, n := range g.Nodes {
		kind[n.ID], name[n.ID] = n.Type, n.Name
	}
	countable := func(id int64) bool { // a named, non-lifeboat block driver node
		return kind[id] == "block-driver" && !strings.HasPrefix(name[id], "#") &&
			!strings.HasPrefix(name[id], FleeceNodePrefix)
	}
	hasParent := make(map[int64]bool)
	for _, e := range g.Edges {
		if countable(e.Parent) {
			hasParent[e.Child] = true
		}
	}
	for _, n := range g.Nodes {
		if !countable(n.ID) || hasParent[n.ID] {
			continue
		}
		if bn, ok := byName[n.Name]; ok {
			disks = append(disks, diskOf("", "", bn))
		}
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Node < disks[j].Node })
	return disks, nil
}

// DevicesDisks are the disks of a machine with devices: those of devs
// (query-block) with a medium inserted, described by their node in nodes
// (query-named-block-nodes) where it is there.
func DevicesDisks(devs []BlockInfo, nodes []BlockNode) []Disk {
	byName := make(map[string]BlockNode, len(nodes))
	for _, n := range nodes {
		byName[n.NodeName] = n
	}
	var disks []Disk
	for _, d := range devs {
		if d.Inserted == nil {
			continue
		}
		n := *d.Inserted
		if full, ok := byName[n.NodeName]; ok {
			n = full // query-named-block-nodes has the bitmaps without the deprecated fields
		}
		disks = append(disks, diskOf(d.Device, d.QDev, n))
	}
	return disks
}

func diskOf(device, qdev string, n BlockNode) Disk {
	return Disk{
		Device:   device,
		QDev:     qdev,
		Node:     n.NodeName,
		Driver:   n.Driver,
		Filename: n.File,
		Size:     n.Image.VirtualSize,
		Bitmaps:  n.DirtyBitmaps,
	}
}

// BlockdevAdd adds a block node; args is the blockdev-add argument object
// (a map, a struct or json.RawMessage).
func (m *Monitor) BlockdevAdd(ctx context.Context, args any) error {
	return m.Execute(ctx, "blockdev-add", args, nil)
}

// BlockdevDel deletes a node added with BlockdevAdd.
func (m *Monitor) BlockdevDel(ctx context.Context, nodeName string) error {
	return m.Execute(ctx, "blockdev-del", map[string]any{"node-name": nodeName}, nil)
}
