package job

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/clock"
	"lifeboat/internal/container"
	"lifeboat/internal/nbd"
	"lifeboat/internal/recovery"
	"lifeboat/internal/replica"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
)

// A replica point copied into a vault (lifeboat replicate copy) becomes an
// ordinary recovery point of the machine there, so replication and backup
// share one history: restore, copy, retention and verify treat it as any
// other. The target site holds the point (replica.Store.Hold) as overlays
// on its host, and the backup engine reads them — only the extents the
// replica's journal saw written since the machine's previous copied point,
// when that point is the machine's latest in the vault and came from the
// same replica; otherwise every block, compared with the latest point.

// ReplicaSite is the target site a point is copied from
// (replicate.Client).
type ReplicaSite interface {
	Hold(ctx context.Context, machine string, opts replica.HoldOptions) (*replica.Hold, error)
	Release(ctx context.Context, machine, id string) error
}

// ReplicaTag tags every point copied from replication (points --tag).
const ReplicaTag = "replica"

// ReplicaCopy copies one replica point into a vault.
type ReplicaCopy struct {
	Machine string
	// Point is "latest" (or ""), "latest-app", a point ID or an RFC 3339
	// time, as failover takes them.
	Point string
	// Site names the site in messages and the disks' sources.
	Site string
	Tags []string
}

// ReplicaCopyResult says what a copy did.
type ReplicaCopyResult struct {
	Point *recovery.Point `json:"point"`
	// Cut is the replica point copied.
	Cut replica.Point `json:"cut"`
	// AlreadyCopied: the machine's latest point in the vault is this cut
	// already; nothing was written.
	AlreadyCopied bool `json:"already_copied,omitempty"`
}

// ReplicaCopyJSON is a replica copy as reported (replicate copy --json):
// the point in the vault, the cut it holds, and the point's ID.
type ReplicaCopyJSON struct {
	Point         PointJSON     `json:"point"`
	Cut           replica.Point `json:"cut"`
	AlreadyCopied bool          `json:"already_copied"`
	ID            string        `json:"id"`
}

// Report is r as reported.
func (r *ReplicaCopyResult) Report() ReplicaCopyJSON {
	return ReplicaCopyJSON{Point: PointOf(r.Point), Cut: r.Cut, AlreadyCopied: r.AlreadyCopied, ID: r.Point.ID.String()}
}

// replicaTracking is the tracking a copied disk records: the replica and
// its cut, so the next copy can read only what the journal saw since.
func replicaTracking(replicaID string, seq uint64) string {
	return fmt.Sprintf("replica:%s:%d", replicaID, seq)
}

// copiedCut is the replica and cut a point was copied from, when every
// disk of it says the same.
func copiedCut(p *recovery.Point) (string, uint64, bool) {
	var id string
	var seq uint64
	for i, d := range p.Disks {
		rest, ok := strings.CutPrefix(d.Tracking, "replica:")
		if !ok {
			return "", 0, false
		}
		rid, s, ok := strings.Cut(rest, ":")
		n, err := strconv.ParseUint(s, 10, 64)
		if !ok || err != nil || (i > 0 && (rid != id || n != seq)) {
			return "", 0, false
		}
		id, seq = rid, n
	}
	return id, seq, len(p.Disks) > 0
}

// RunReplicaCopy copies a replica point of c.Machine from site into v. It
// must run on the site's host: it reads the held point's overlays there.
func RunReplicaCopy(ctx context.Context, v *vault.Vault, site ReplicaSite, c ReplicaCopy, env Env) (*ReplicaCopyResult, error) {
	if err := recovery.ValidName("machine", c.Machine); err != nil {
		return nil, invalid("machine", "%v", err)
	}
	points, err := recovery.List(ctx, v)
	if err != nil {
		return nil, err
	}
	parent, _ := recovery.Find(points, c.Machine, "latest")
	var opts replica.HoldOptions
	opts.Point = c.Point
	if parent != nil {
		opts.Replica, opts.Since, _ = copiedCut(parent)
	}
	h, err := site.Hold(ctx, c.Machine, opts)
	if err != nil {
		return nil, fmt.Errorf("holding point %s of %s at site %s: %w", cmp.Or(c.Point, "latest"), c.Machine, c.Site, err)
	}
	defer site.Release(context.WithoutCancel(ctx), c.Machine, h.ID)
	res := &ReplicaCopyResult{Cut: h.Point}
	if parent != nil && opts.Replica == h.Replica && opts.Since == h.Point.ID {
		res.Point, res.AlreadyCopied = parent, true
		return res, nil
	}
	// An app-consistent cut had the guest's filesystems frozen by its
	// agent: what a backup calls file-consistent.
	cons := recovery.Crash
	if h.Point.Consistency == "app" {
		cons = recovery.File
	}
	var disks []backup.Disk
	for _, hd := range h.Disks {
		d, err := openHeld(ctx, c, hd)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		bd := backup.Disk{Name: hd.Name, Source: d, Tracking: replicaTracking(h.Replica, h.Point.ID)}
		if h.SinceKnown && hd.Changed != nil {
			ch := &backup.Changes{Since: parent.ID.String(), Source: "replica"}
			for _, x := range hd.Changed {
				ch.Extents = append(ch.Extents, source.Extent{Offset: x.Off, Length: x.Len})
			}
			bd.Changed = ch
		}
		disks = append(disks, bd)
	}
	tags := append([]string{ReplicaTag}, c.Tags...)
	p, err := backup.Run(ctx, v, backup.Options{Machine: c.Machine, Disks: disks, Definition: h.Definition,
		Consistency: cons, Tags: tags, Time: h.Point.Time, Seen: env.Seen,
		Progress: env.Progress, Warn: env.Warn})
	if err != nil {
		return nil, fmt.Errorf("copying point %d of %s into the vault: %w", h.Point.ID, c.Machine, err)
	}
	res.Point = p
	return res, nil
}

// heldDisk reads a held overlay through qemu-nbd, named after the replica
// (no local image: an in-place restore has no file to write back to).
type heldDisk struct {
	*nbd.Disk
	exp *container.Export
}

func (d heldDisk) Close() error {
	err := d.Disk.Close()
	if cerr := d.exp.Close(); err == nil {
		err = cerr
	}
	return err
}

func openHeld(ctx context.Context, c ReplicaCopy, hd replica.HeldDisk) (*heldDisk, error) {
	exp, err := container.Serve(ctx, hd.File, container.ServeOptions{Format: "qcow2"})
	if err != nil {
		return nil, fmt.Errorf("reading held disk %s of %s (replicate copy runs on the site's host): %w", hd.Name, c.Machine, err)
	}
	cl, err := exp.Dial(ctx, nbd.WithMetaContexts(nbd.ContextBaseAllocation))
	if err != nil {
		exp.Close()
		return nil, fmt.Errorf("reading held disk %s of %s: %w", hd.Name, c.Machine, err)
	}
	return &heldDisk{Disk: nbd.NewDisk(cl, fmt.Sprintf("replica:%s/%s/%s", c.Site, c.Machine, hd.Name)), exp: exp}, nil
}

// RunReplicaCopies runs run now and then every interval until ctx ends
// (replicate copy --every): each run copies the point asked for (latest,
// usually), so the vault follows the replica at that pace. A failed copy
// is reported and tried again at the next interval; report gets every
// outcome.
func RunReplicaCopies(ctx context.Context, clk clock.Clock, every time.Duration, run func(context.Context) (*ReplicaCopyResult, error), report func(*ReplicaCopyResult, error)) {
	for {
		start := clk.Now()
		res, err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		report(res, err)
		t := time.NewTimer(max(0, every-clk.Now().Sub(start)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
