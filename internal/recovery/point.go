// Package recovery is lifeboat's L3: recovery points — every disk of a
// machine at one instant, its definition and its consistency level.
package recovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// Consistency is what a point's disks are consistent with.
type Consistency string

// Consistency levels (DESIGN.md).
const (
	Crash Consistency = "crash"
	File  Consistency = "file"
	App   Consistency = "app"
)

// ParseConsistency checks a consistency name.
func ParseConsistency(s string) (Consistency, error) {
	switch c := Consistency(s); c {
	case Crash, File, App:
		return c, nil
	}
	return "", fmt.Errorf("unknown consistency %q: want crash, file or app", s)
}

// rank orders the levels: each one includes those below it.
func (c Consistency) rank() int {
	switch c {
	case File:
		return 1
	case App:
		return 2
	}
	return 0
}

// ErrConsistencyNotMet is the error of a point less consistent than the
// backup that wrote it asked for, when that was required.
var ErrConsistencyNotMet = errors.New("consistency asked for not achieved")

// RequireConsistency returns an error wrapping ErrConsistencyNotMet, and
// saying why (the point's notes), when p is less consistent than asked.
// The point is committed either way.
func (p *Point) RequireConsistency(asked Consistency) error {
	if p.Consistency.rank() >= asked.rank() {
		return nil
	}
	why := ""
	if len(p.Notes) > 0 {
		why = ": " + strings.Join(p.Notes, "; ")
	}
	return fmt.Errorf("point %s is written, but it is %s-consistent, not %s-consistent as required%s: %w",
		p.ID.Short(), p.Consistency, asked, why, ErrConsistencyNotMet)
}

// DiskStats say what a backup did for one disk.
type DiskStats struct {
	ReadBytes    int64 `json:"read_bytes"`
	ZeroChunks   int64 `json:"zero_chunks"`
	ParentChunks int64 `json:"parent_chunks"` // same as in the parent point
	DedupChunks  int64 `json:"dedup_chunks"`  // found elsewhere in the vault
	NewChunks    int64 `json:"new_chunks"`
	NewBytes     int64 `json:"new_bytes"` // plaintext bytes of new chunks
	// TrackedChunks are blocks change tracking said were unchanged since
	// the parent point: taken from it without reading the disk.
	TrackedChunks int64 `json:"tracked_chunks,omitempty"`
	// AuditedChunks of those were re-read anyway and compared (--audit).
	AuditedChunks int64 `json:"audited_chunks,omitempty"`
}

// Disk is one disk of a point.
type Disk struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Size      int64     `json:"size"`
	ChunkSize int       `json:"chunk_size"`
	Manifest  chunk.ID  `json:"manifest"`
	Stats     DiskStats `json:"stats"`
	// Tracking names the change tracker (a QEMU dirty bitmap) that started
	// recording writes at this point's instant; the next backup reads only
	// what it recorded. Empty when the disk has none.
	Tracking string `json:"tracking,omitempty"`
	// ChangeSource says how the backup found changed blocks: "tracking"
	// (a dirty bitmap that matched the parent point), "compare" (every
	// block read and compared with the parent) or "full" (no parent).
	ChangeSource string `json:"change_source,omitempty"`
	// Image is the absolute path of the image file or block device that
	// holds the disk, when it is one: where an in-place restore writes.
	// For a live QEMU disk it is the image QEMU has open, while Source
	// names the QMP socket and node. Empty in points written before it
	// was recorded, and for disks that are no local file (NBD).
	Image string `json:"image,omitempty"`
	// Format is the container format of Image, the image the disk was
	// read from ("raw", "qcow2", "vmdk", ...: as qemu-img names it, or
	// for a live QEMU disk the format driver QEMU opened it with), and
	// Backing its backing chain, nearest first. The stored data is always
	// the disk the guest saw, never the container's bytes. Empty when
	// unknown (NBD sources, and points written before lifeboat recorded
	// it).
	Format  string   `json:"format,omitempty"`
	Backing []string `json:"backing,omitempty"`
}

// ErrNoImage means a disk of a point records no local file to restore in
// place onto.
var ErrNoImage = errors.New("the point records no image file for the disk")

// LocalSource reports whether a disk source names a local file or block
// device, rather than a live QEMU disk (qemu:SOCKET#NODE) or an NBD URI.
func LocalSource(src string) bool {
	return src != "" && !strings.HasPrefix(src, "qemu:") && !strings.Contains(src, "://")
}

// InPlacePath is where an in-place restore of the disk writes: Image, or
// for older points a Source that is an absolute local path. A relative
// Source is refused rather than resolved against today's working
// directory, which could name another file of the same size.
func (d *Disk) InPlacePath() (string, error) {
	if d.Image != "" {
		return d.Image, nil
	}
	src := d.Source
	switch {
	case !LocalSource(src):
		return "", fmt.Errorf("disk %s: %w: it was read from %q (older lifeboat versions recorded no image path for live backups); name the file with --disk %s --to-file PATH --in-place",
			d.Name, ErrNoImage, src, d.Name)
	case !filepath.IsAbs(src):
		return "", fmt.Errorf("disk %s: %w: it was read from the relative path %q, which names a file only in the directory the backup ran in; name the file with --disk %s --to-file PATH --in-place",
			d.Name, ErrNoImage, src, d.Name)
	}
	return src, nil
}

// Stats say what a backup did overall.
type Stats struct {
	DurationMS  int64 `json:"duration_ms"`
	StoredBytes int64 `json:"stored_bytes"` // bytes of packs uploaded
	Packs       int64 `json:"packs"`
}

// Point is a recovery point.
type Point struct {
	Version     int             `json:"version"`
	Machine     string          `json:"machine"`
	Time        time.Time       `json:"time"`
	Consistency Consistency     `json:"consistency"`
	Host        string          `json:"host"`
	Parent      string          `json:"parent,omitempty"`
	Tags        []string        `json:"tags,omitempty"`
	Definition  json.RawMessage `json:"definition"`
	// Notes record what did not go as asked without failing the backup,
	// such as a freeze that failed and left the point crash-consistent.
	Notes []string `json:"notes,omitempty"`
	Disks []Disk   `json:"disks"`
	Stats Stats    `json:"stats"`

	ID chunk.ID `json:"-"`
}

// Size is the total size of the point's disks.
func (p *Point) Size() int64 {
	var n int64
	for _, d := range p.Disks {
		n += d.Size
	}
	return n
}

// DiskFormat is the format a restore of disk name writes by default: the
// one its definition gives the disk (paired as MatchDisks pairs them),
// else qcow2 if it was read from a qcow2 image, else raw.
func (p *Point) DiskFormat(name string) string {
	names := make([]string, len(p.Disks))
	for i, d := range p.Disks {
		names[i] = d.Name
	}
	if def, err := ParseDefinition(p.Definition); err == nil {
		if f := def.DiskFormat(names, name); f != "" {
			return f
		}
	}
	if d, ok := p.Disk(name); ok && d.Format == "qcow2" {
		return "qcow2"
	}
	return "raw"
}

// Disk returns the disk named name.
func (p *Point) Disk(name string) (*Disk, bool) {
	for i := range p.Disks {
		if p.Disks[i].Name == name {
			return &p.Disks[i], true
		}
	}
	return nil, false
}

// ChangeSummary says how the point's disks found their changes since the
// point before (tracking, compare, full): one word when all agree, else
// per disk (vda:tracking,vdb:compare); "-" where a point predates the record.
func (p *Point) ChangeSummary() string {
	if len(p.Disks) == 0 {
		return "-"
	}
	var per []string
	same := true
	for _, d := range p.Disks {
		per = append(per, d.Name+":"+cmp.Or(d.ChangeSource, "-"))
		same = same && d.ChangeSource == p.Disks[0].ChangeSource
	}
	if same {
		return cmp.Or(p.Disks[0].ChangeSource, "-")
	}
	return strings.Join(per, ",")
}

// NoteSummary is the point's first note on one line of at most width
// runes, and the count of the others; cut says whether anything was left
// out.
func (p *Point) NoteSummary(width int) (s string, cut bool) {
	if len(p.Notes) == 0 {
		return "", false
	}
	s = strings.Join(strings.Fields(p.Notes[0]), " ")
	if r := []rune(s); len(r) > width {
		s, cut = string(r[:width-1])+"…", true
	}
	if len(p.Notes) > 1 {
		s, cut = fmt.Sprintf("%s (+%d more)", s, len(p.Notes)-1), true
	}
	return s, cut
}

// Check refuses a point whose names could not have been given on input:
// machine and disk names pass ValidName, the one check of names given to
// backup, and are local paths, because restore joins them to a directory;
// the consistency is a known level. A point read from a vault is checked
// before any of it is used: an attacker with the passphrase, or a buggy
// writer, could store a disk named "../../etc/x" that authenticates.
func (p *Point) Check() error {
	if err := ValidName("machine", p.Machine); err != nil {
		return err
	}
	if _, err := ParseConsistency(string(p.Consistency)); err != nil {
		return err
	}
	if len(p.Disks) == 0 {
		return errors.New("point has no disks")
	}
	seen := map[string]bool{}
	for _, d := range p.Disks {
		if err := ValidName("disk", d.Name); err != nil {
			return err
		}
		if !filepath.IsLocal(d.Name) {
			return fmt.Errorf("disk name %q is not a local file name", d.Name)
		}
		if seen[d.Name] {
			return fmt.Errorf("two disks named %q", d.Name)
		}
		seen[d.Name] = true
		if d.Size < 0 {
			return fmt.Errorf("disk %s: negative size %d", d.Name, d.Size)
		}
		// In-place restore writes to the recorded image: it must be a
		// plain absolute path, as lifeboat records it.
		if d.Image != "" && (!filepath.IsAbs(d.Image) || filepath.Clean(d.Image) != d.Image || strings.ContainsAny(d.Image, "\x00\n\r")) {
			return fmt.Errorf("disk %s: image path %q is not a clean absolute path", d.Name, d.Image)
		}
	}
	return nil
}

// Save stores the point; this commits it.
func Save(ctx context.Context, v *vault.Vault, p *Point) error {
	p.Version = 1
	if err := p.Check(); err != nil {
		return fmt.Errorf("refusing to store point: %w", err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding point: %w", err)
	}
	id, err := v.SaveObject(ctx, vault.KindPoint, data)
	if err != nil {
		return err
	}
	p.ID = id
	return nil
}

// Load reads one point. A point that does not decode, or whose names fail
// Check, is an error wrapping chunk.ErrCorrupt that names the object.
func Load(ctx context.Context, v *vault.Vault, id chunk.ID) (*Point, error) {
	data, err := v.LoadObject(ctx, vault.KindPoint, id)
	if err != nil {
		return nil, err
	}
	p, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vault.ObjectName(vault.KindPoint, id), err)
	}
	p.ID = id
	return p, nil
}

// Decode parses and checks the plaintext of a point object.
func Decode(data []byte) (*Point, error) {
	p := &Point{}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("%w: %w", chunk.ErrCorrupt, err)
	}
	if p.Version != 1 {
		return nil, fmt.Errorf("point version %d: %w", p.Version, vault.ErrNewerFormat)
	}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", chunk.ErrCorrupt, err)
	}
	return p, nil
}

// Unreadable is an object under points/ that is not a readable point.
type Unreadable struct {
	Name string
	ID   chunk.ID // zero when the name is not a point ID
	Err  error
}

// Scan loads every point that is not soft-deleted, oldest first, and
// returns apart the objects under points/ that are not readable points: a
// foreign name, a damaged or planted object, an unknown version. Points
// deleted while listing are skipped. Errors of the storage itself stop it.
func Scan(ctx context.Context, v *vault.Vault) ([]*Point, []Unreadable, error) {
	return scan(ctx, v, false)
}

// scan is Scan, with the soft-deleted points too when withDeleted.
func scan(ctx context.Context, v *vault.Vault, withDeleted bool) ([]*Point, []Unreadable, error) {
	ids, foreign, err := v.ScanIDs(ctx, vault.KindPoint)
	if err != nil {
		return nil, nil, err
	}
	if !withDeleted {
		tombs, err := v.Tombstones(ctx)
		if err != nil {
			return nil, nil, err
		}
		ids = slices.DeleteFunc(ids, func(id chunk.ID) bool { _, ok := tombs[id]; return ok })
	}
	var bad []Unreadable
	for _, name := range foreign {
		bad = append(bad, Unreadable{Name: name, Err: fmt.Errorf("%q: not a point ID: %w", name, chunk.ErrCorrupt)})
	}
	points := make([]*Point, len(ids))
	errs := make([]error, len(ids))
	idx := make([]int, len(ids))
	for i := range idx {
		idx[i] = i
	}
	err = vault.Parallel(ctx, 8, idx, func(ctx context.Context, i int) error {
		p, err := Load(ctx, v, ids[i])
		switch {
		case err == nil:
			points[i] = p
		case blob.IsNotExist(err):
		case unreadable(err):
			errs[i] = err
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("loading points: %w", err)
	}
	out := points[:0]
	for i, p := range points {
		if p != nil {
			out = append(out, p)
		} else if errs[i] != nil {
			bad = append(bad, Unreadable{Name: vault.ObjectName(vault.KindPoint, ids[i]), ID: ids[i], Err: errs[i]})
		}
	}
	Sort(out)
	return out, bad, nil
}

// unreadable reports whether err is about the object's content rather than
// the storage: damaged, planted, too large, or of an unknown version.
func unreadable(err error) bool {
	return errors.Is(err, chunk.ErrCorrupt) || errors.Is(err, blob.ErrTooLarge) || errors.Is(err, vault.ErrNewerFormat)
}

// List loads every readable point, oldest first. An object under points/
// that is not a readable point is skipped with a warning naming it
// (vault.Options.Warn), so that one damaged or planted object does not
// stop listing, restoring or backing up the others.
func List(ctx context.Context, v *vault.Vault) ([]*Point, error) {
	points, bad, err := Scan(ctx, v)
	if err != nil {
		return nil, err
	}
	warnUnreadable(v, bad)
	return points, nil
}

func warnUnreadable(v *vault.Vault, bad []Unreadable) {
	for _, b := range bad {
		v.Warn(fmt.Sprintf("skipping %q: %v", b.Name, b.Err))
	}
}

// ListAll loads every point, soft-deleted ones too, and fails if any
// object under points/ is not a readable point. Prune uses it: a point it
// could not read may need data that it would otherwise delete.
func ListAll(ctx context.Context, v *vault.Vault) ([]*Point, error) {
	points, bad, err := scan(ctx, v, true)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		names := make([]string, len(bad))
		for i, b := range bad {
			names[i] = b.Name
		}
		return nil, fmt.Errorf("%d unreadable object(s) under points/ (%s): %w", len(bad), strings.Join(names, ", "), bad[0].Err)
	}
	return points, nil
}

// Resolve finds the point ref ("latest" or an ID prefix) of machine among
// the readable points, warning about unreadable ones. When ref names an
// unreadable point, the error is that point's. It also returns every
// readable point (of all machines, oldest first), found or not, for the
// caller's other checks (lastseen); nil only on an error of the storage.
func Resolve(ctx context.Context, v *vault.Vault, machine, ref string) (*Point, []*Point, error) {
	points, bad, err := Scan(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	warnUnreadable(v, bad)
	p, err := Find(points, machine, ref)
	if errors.Is(err, ErrNoPoint) && ref != "latest" {
		for _, b := range bad {
			if !b.ID.IsZero() && strings.HasPrefix(b.ID.String(), strings.ToLower(ref)) {
				return nil, points, fmt.Errorf("point %s: %w", ref, b.Err)
			}
		}
		// Say so when it is forgotten but can be brought back.
		tombs, terr := v.Tombstones(ctx)
		for id := range tombs {
			if terr == nil && strings.HasPrefix(id.String(), strings.ToLower(ref)) {
				return nil, points, fmt.Errorf("%w: %s is soft-deleted ('lifeboat points --deleted'; 'lifeboat undelete' brings it back)", err, id.Short())
			}
		}
	}
	return p, points, err
}

// Sort orders points oldest first, ties by ID.
func Sort(points []*Point) {
	sort.Slice(points, func(i, j int) bool {
		if !points[i].Time.Equal(points[j].Time) {
			return points[i].Time.Before(points[j].Time)
		}
		return points[i].ID.String() < points[j].ID.String()
	})
}

// ErrNoPoint means no point matches a reference.
var ErrNoPoint = errors.New("no such recovery point")

// Find resolves "latest" or an ID prefix (at least 6 hex characters) among
// points, limited to machine when it is not empty.
func Find(points []*Point, machine, ref string) (*Point, error) {
	var match []*Point
	for _, p := range points {
		if machine != "" && p.Machine != machine {
			continue
		}
		if ref == "latest" || strings.HasPrefix(p.ID.String(), strings.ToLower(ref)) {
			match = append(match, p)
		}
	}
	what := ref
	if machine != "" {
		what = fmt.Sprintf("%s of machine %q", ref, machine)
	}
	switch {
	case ref != "latest" && len(ref) < 6:
		return nil, fmt.Errorf("point ID %q is too short: give at least 6 characters", ref)
	case len(match) == 0:
		return nil, fmt.Errorf("%w: %s", ErrNoPoint, what)
	case ref == "latest":
		return match[len(match)-1], nil
	case len(match) > 1:
		return nil, fmt.Errorf("point ID %q is ambiguous: %d points match", ref, len(match))
	}
	return match[0], nil
}
