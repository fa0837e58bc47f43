package maintenance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// PruneOptions tune Prune.
type PruneOptions struct {
	DryRun bool
	// RepackUnused is the fraction of unused bytes from which a partly used
	// pack is rewritten; 0 means 0.1.
	RepackUnused float64
	// Log, if set, receives one line per step.
	Log func(string)
}

// PruneReport says what prune found and did.
type PruneReport struct {
	Points           int `json:"points"`
	ReferencedChunks int `json:"referenced_chunks"`
	Packs            int `json:"packs"`
	// PackBytes is the size of the packs the vault held when prune listed
	// them, before it deleted anything (the server's vault-size gauge);
	// absent when it did not get that far (a deferred earlier plan).
	PackBytes        int64 `json:"pack_bytes,omitempty"`
	KeptPacks        int   `json:"kept_packs"`
	RepackedPacks    int   `json:"repacked_packs"`
	DeletedPacks     int   `json:"deleted_packs"`
	DeletedBytes     int64 `json:"deleted_bytes"`
	RepackedBytes    int64 `json:"repacked_bytes"`
	DeletedIndexes   int   `json:"deleted_indexes"`
	DeletedManifests int   `json:"deleted_manifests"`
	ResumedPlans     int   `json:"resumed_plans"`
	// PurgedPoints are soft-deleted points whose window had passed, now
	// deleted; SoftDeletedPoints those still in their window, whose data
	// is kept.
	PurgedPoints      int `json:"purged_points"`
	SoftDeletedPoints int `json:"soft_deleted_points"`
	// PartialUploads are temporary files of Puts killed mid-write (a
	// directory vault), removed once older than a session can live.
	PartialUploads      int   `json:"partial_uploads"`
	PartialUploadsBytes int64 `json:"partial_uploads_bytes"`
	// Deferred is set when a plan was written but running backups or
	// restores started before it: the next prune completes it.
	Deferred bool   `json:"deferred"`
	Note     string `json:"note,omitempty"`
	// LockedObjects counts the objects prune would have deleted that are
	// under an object lock (vault init --lock), left until LockedUntil,
	// the earliest date one of them may go: a later prune removes them.
	LockedObjects int       `json:"locked_objects,omitempty"`
	LockedUntil   time.Time `json:"locked_until,omitzero"`
	// Warnings name what prune found suspicious but went on despite, such
	// as a session marker dated in the future (ignored).
	Warnings []string `json:"warnings,omitempty"`
}

// ErrPruneRunning means another prune holds a live session on the vault.
var ErrPruneRunning = errors.New("another prune is running on this vault")

// sessionMargin covers clock differences between hosts when comparing a
// session's start with a plan's creation.
const sessionMargin = 2 * time.Minute

type packState struct {
	id      chunk.ID
	size    int64
	entries []chunk.PackEntry
}

// rewriteEntries bounds the entries of one index object prune writes.
const rewriteEntries = 1 << 16

// What prune does with a pack.
const (
	packKeep = iota
	packRepack
	packDrop
)

// packTable numbers the packs prune met (1-based in owner) and sums, per
// pack, the bytes of the referenced chunks it owns.
type packTable struct {
	packs []packInfo
	num   map[chunk.ID]uint32 // pack -> index in packs
	owner map[chunk.ID]uint32 // referenced chunk -> owning pack's index + 1; 0 while unowned
	sizes map[chunk.ID]int64  // stored packs
}

type packInfo struct {
	id         chunk.ID
	size, used int64
	blobs      int64 // bytes of all its blobs: size less the header
}

// add records a pack's entries (once per pack) and returns its number.
func (t *packTable) add(id chunk.ID, size int64, entries []chunk.PackEntry) uint32 {
	if n, ok := t.num[id]; ok {
		return n
	}
	n := uint32(len(t.packs))
	t.num[id] = n
	p := packInfo{id: id, size: size}
	for _, e := range entries {
		p.blobs += int64(e.Length)
		if o, ok := t.owner[e.ID]; ok && o == 0 {
			t.owner[e.ID] = n + 1
			p.used += int64(e.Length)
		}
	}
	t.packs = append(t.packs, p)
	return n
}

// Prune deletes data no point references and rewrites mostly-unused packs,
// safely beside running backups (docs/format.md, "Prune"). A prune that
// did its work also removes the markers of finished sessions, which
// writers with append-only credentials leave behind.
func Prune(ctx context.Context, v *vault.Vault, opts PruneOptions) (*PruneReport, error) {
	rep, err := prune(ctx, v, opts)
	if err != nil || opts.DryRun || rep.Deferred {
		return rep, err
	}
	if _, dead, err := v.ListSessions(ctx); err == nil {
		v.TidySessions(ctx, dead)
	}
	return rep, nil
}

func prune(ctx context.Context, v *vault.Vault, opts PruneOptions) (*PruneReport, error) {
	if opts.RepackUnused == 0 {
		opts.RepackUnused = 0.1
	}
	logf := func(f string, a ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(f, a...))
		}
	}
	rep := &PruneReport{}
	live, dead, err := v.ListSessions(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range dead {
		if s.Future {
			w := fmt.Sprintf("session marker %s (%s on %s, pid %d) says it was refreshed at %s, in the future: ignored as expired",
				s.Name, s.Kind, s.Host, s.PID, s.Refreshed.Format(time.RFC3339))
			rep.Warnings = append(rep.Warnings, w)
			logf("warning: %s", w)
		}
	}
	for _, s := range live {
		if s.Kind == "prune" {
			return nil, fmt.Errorf("%w (host %q, pid %d, started %s)", ErrPruneRunning, s.Host, s.PID, s.Started.Format(time.RFC3339))
		}
	}
	var sess *vault.Session // nil in a dry run, which stores nothing
	if !opts.DryRun {
		// Before anything is written: a prune that cannot delete must not
		// leave a repack and a plan half done.
		if err := v.CheckDeletes(ctx, "prune"); err != nil {
			return nil, err
		}
		if sess, err = v.StartSession(ctx, "prune"); err != nil {
			return nil, err
		}
		// Repacked packs stored without their index object leave the
		// marker abandoned, for the next writer to adopt them.
		defer sess.Finish(context.WithoutCancel(ctx))
	}

	if !opts.DryRun {
		if rep.PartialUploads, rep.PartialUploadsBytes, err = removeLeftovers(ctx, v); err != nil {
			return rep, err
		}
		if rep.PartialUploads > 0 {
			logf("removed %d partial upload(s) of killed writes, %d bytes", rep.PartialUploads, rep.PartialUploadsBytes)
		}
	}

	// Finish what an earlier prune planned.
	plans, err := v.Plans(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range plans {
		if opts.DryRun {
			rep.Note = fmt.Sprintf("%d unfinished plan(s) would be completed first", len(plans))
			break
		}
		done, err := execute(ctx, v, p, rep, true, logf)
		if err != nil {
			return rep, err
		}
		if !done {
			rep.Deferred = true
			return rep, nil
		}
		rep.ResumedPlans++
	}

	// Soft-deleted points past their window go now; the others keep
	// their data (a dry run counts, as if purged, those that would go).
	purged, kept, err := purgeDeleted(ctx, v, opts.DryRun)
	if err != nil {
		return rep, err
	}
	rep.PurgedPoints, rep.SoftDeletedPoints = len(purged), kept
	if len(purged) > 0 {
		logf("purged %d soft-deleted point(s) past their window; %d still in it", len(purged), kept)
	}
	if !opts.DryRun {
		purged = nil
	}

	// What is referenced, first: the index objects are then read one at
	// a time, and only what each pack owns is kept, so that memory follows
	// the referenced chunks (one map entry each), not every index entry.
	refChunks, refManifests, npoints, err := referenced(ctx, v, purged)
	if err != nil {
		return nil, err
	}
	rep.Points = npoints
	rep.ReferencedChunks = len(refChunks)
	manifestIDs, err := v.ListIDs(ctx, vault.KindManifest)
	if err != nil {
		return nil, err
	}
	var deadManifests []chunk.ID
	for _, id := range manifestIDs {
		if !refManifests[id] {
			deadManifests = append(deadManifests, id)
		}
	}

	// What exists: index objects and their packs, and every stored pack.
	indexIDs, err := v.ListIDs(ctx, vault.KindIndex)
	if err != nil {
		return nil, err
	}
	stored, err := v.ListPacks(ctx)
	if err != nil {
		return nil, err
	}
	t := &packTable{num: map[chunk.ID]uint32{}, owner: refChunks, sizes: map[chunk.ID]int64{}}
	for _, p := range stored {
		t.sizes[p.ID] = p.Size
		rep.PackBytes += p.Size
	}
	// Each referenced chunk is owned by the first pack met that holds it
	// (refChunks maps it to that pack's number, 1-based); other copies are
	// unused. An index object naming a pack that is not stored is rewritten
	// without it.
	objPacks := make([][]uint32, len(indexIDs))
	dirty := make([]bool, len(indexIDs))
	for i, id := range indexIDs {
		f, err := v.LoadIndexFile(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("prune needs every index object readable (run verify): %w", err)
		}
		for _, p := range f.Packs {
			size, ok := t.sizes[p.ID]
			if !ok {
				logf("index names missing pack %s: dropping its entries", p.ID.Short())
				dirty[i] = true
				continue
			}
			objPacks[i] = append(objPacks[i], t.add(p.ID, size, p.Entries))
		}
	}
	orphans := map[uint32][]chunk.PackEntry{}
	for _, p := range stored {
		if _, ok := t.num[p.ID]; ok {
			continue
		}
		entries, err := v.ReadPackHeader(ctx, p.ID, p.Size)
		if err != nil {
			if errors.Is(err, chunk.ErrCorrupt) {
				logf("pack %s has an unreadable header and no index: deleting it", p.ID.Short())
				entries = nil
			} else {
				return nil, err
			}
		}
		orphans[t.add(p.ID, p.Size, entries)] = entries
	}
	rep.Packs = len(t.packs)

	// Classify packs.
	class := make([]int, len(t.packs))
	for n, p := range t.packs {
		// Unused bytes are those of blobs no point needs here; the header
		// is not counted (in a pack of many small blobs it is a large part).
		switch unused := p.blobs - p.used; {
		case p.used == 0:
			class[n] = packDrop
		case float64(unused) >= opts.RepackUnused*float64(p.blobs):
			class[n] = packRepack
		}
	}
	// Index objects naming a pack that goes are replaced; the others stay
	// as they are (a host's index cache stays valid for them).
	for i := range indexIDs {
		for _, n := range objPacks[i] {
			dirty[i] = dirty[i] || class[n] != packKeep
		}
	}
	if v.Lock() != nil {
		if deadManifests, err = aroundLocks(ctx, v, rep, t.packs, class, indexIDs, dirty, objPacks, deadManifests); err != nil {
			return nil, err
		}
		if rep.LockedObjects > 0 {
			logf("%d objects no point needs are locked: they stay until %s at least", rep.LockedObjects, rep.LockedUntil.Format(time.RFC3339))
		}
	}
	var nkeep, nrepack, ndrop int
	for n, p := range t.packs {
		switch class[n] {
		case packDrop:
			ndrop++
			rep.DeletedBytes += p.size
		case packRepack:
			nrepack++
			rep.RepackedBytes += p.size
		default:
			nkeep++
		}
	}
	rep.KeptPacks, rep.RepackedPacks, rep.DeletedPacks = nkeep, nrepack, ndrop
	var oldIndexes []chunk.ID
	namedElsewhere := map[uint32]bool{} // kept packs a surviving index object names
	for i := range indexIDs {
		if dirty[i] {
			oldIndexes = append(oldIndexes, indexIDs[i])
			continue
		}
		for _, n := range objPacks[i] {
			namedElsewhere[n] = true
		}
	}
	rep.DeletedIndexes = len(oldIndexes)
	rep.DeletedManifests = len(deadManifests)
	if ndrop == 0 && nrepack == 0 && len(deadManifests) == 0 && len(orphans) == 0 && len(oldIndexes) == 0 {
		rep.Note = "nothing to prune"
		return rep, nil
	}
	if opts.DryRun {
		return rep, nil
	}
	logf("%d packs: keep %d, repack %d, delete %d; %d unreferenced manifests", len(t.packs), nkeep, nrepack, ndrop, len(deadManifests))

	// Repack live blobs (checked, copied sealed as they are) into new
	// packs, and index the kept packs of replaced index objects (and kept
	// orphans) anew, reading the replaced objects a second time.
	ix := chunk.NewIndex()
	packer := v.NewPacker(ctx, ix, sess)
	out := &chunk.IndexFile{}
	outEntries := 0
	flush := func() error {
		if len(out.Packs) == 0 {
			return nil
		}
		_, err := v.SaveIndexFile(ctx, out)
		out, outEntries = &chunk.IndexFile{}, 0
		return err
	}
	visited := map[uint32]bool{}
	visit := func(n uint32, entries []chunk.PackEntry) error {
		if visited[n] {
			return nil
		}
		visited[n] = true
		switch class[n] {
		case packRepack:
			return copyLive(ctx, v, &packState{id: t.packs[n].id, size: t.packs[n].size, entries: entries}, t.owner, n+1, packer)
		case packKeep:
			if namedElsewhere[n] {
				return nil
			}
			out.Packs = append(out.Packs, chunk.IndexPack{ID: t.packs[n].id, Entries: entries})
			if outEntries += len(entries); outEntries >= rewriteEntries {
				return flush()
			}
		}
		return nil
	}
	err = func() error {
		for i, id := range indexIDs {
			if !dirty[i] {
				continue
			}
			f, err := v.LoadIndexFile(ctx, id)
			if err != nil {
				return fmt.Errorf("prune needs every index object readable (run verify): %w", err)
			}
			for _, p := range f.Packs {
				if n, ok := t.num[p.ID]; ok {
					if err := visit(n, p.Entries); err != nil {
						return err
					}
				}
			}
		}
		for n, entries := range orphans {
			if err := visit(n, entries); err != nil {
				return err
			}
		}
		return flush()
	}()
	if err != nil {
		packer.Abort()
		return rep, err
	}
	if err := packer.Close(); err != nil {
		return rep, err
	}
	plan := &vault.Plan{Version: 1, Created: v.Clock().Now().UTC(), Indexes: oldIndexes, Manifests: deadManifests}
	for n, p := range t.packs {
		if class[n] != packKeep {
			plan.Packs = append(plan.Packs, p.id)
		}
	}
	if err := v.SavePlan(ctx, plan); err != nil {
		return rep, err
	}
	// Let the collector have this prune's tables before the rescue check
	// builds its own.
	t, refChunks, orphans, objPacks, class, namedElsewhere, visited = nil, nil, nil, nil, nil, nil, nil
	done, err := execute(ctx, v, plan, rep, false, logf)
	if err != nil {
		return rep, err
	}
	rep.Deferred = !done
	return rep, nil
}

func copyLive(ctx context.Context, v *vault.Vault, p *packState, owner map[chunk.ID]uint32, num uint32, packer *vault.Packer) error {
	name := chunk.PackName(p.id)
	data, err := v.Store().Get(ctx, name)
	if err != nil {
		return fmt.Errorf("repacking: reading %s: %w", name, err)
	}
	var buf []byte
	for _, e := range p.entries {
		if owner[e.ID] != num {
			continue
		}
		if int64(e.Offset)+int64(e.Length) > int64(len(data)) {
			return fmt.Errorf("repacking %s: entry outside the pack: %w", name, chunk.ErrCorrupt)
		}
		sealed := data[e.Offset : e.Offset+e.Length]
		if buf, err = v.Codec().DecodeBlob(buf, e.ID, sealed, int(e.RawLength)); err != nil {
			return fmt.Errorf("repacking %s (nothing was deleted; run verify --read-data): %w", name, err)
		}
		if err := packer.Add(e.ID, sealed, int(e.RawLength)); err != nil {
			return err
		}
	}
	return nil
}

// referenced loads every point, soft-deleted ones too, but for those in
// skip, and returns the chunks and manifests they use. It fails if any
// object under points/ is unreadable: that point might need data prune
// would otherwise delete.
func referenced(ctx context.Context, v *vault.Vault, skip map[chunk.ID]bool) (chunks map[chunk.ID]uint32, manifests map[chunk.ID]bool, n int, err error) {
	points, err := recovery.ListAll(ctx, v)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("prune needs every point readable (run verify): %w", err)
	}
	points = slices.DeleteFunc(points, func(p *recovery.Point) bool { return skip[p.ID] })
	chunks, manifests = map[chunk.ID]uint32{}, map[chunk.ID]bool{}
	for _, p := range points {
		for _, d := range p.Disks {
			if manifests[d.Manifest] {
				continue
			}
			m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("prune needs every point readable (run verify): point %s: %w", p.ID.Short(), err)
			}
			manifests[d.Manifest] = true
			for _, id := range m.IDs {
				if !id.IsZero() {
					chunks[id] = 0
				}
			}
		}
	}
	return chunks, manifests, len(points), nil
}

// execute carries out a plan if no live session predates it and nothing
// referenced depends on it; it reports whether the plan is finished. In a
// vault with a lock, what is locked by now is left (a resumed plan's is
// counted in rep; a new one was planned around the locks already).
func execute(ctx context.Context, v *vault.Vault, plan *vault.Plan, rep *PruneReport, resumed bool, logf func(string, ...any)) (bool, error) {
	live, err := v.Sessions(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range live {
		if s.Kind != "prune" && s.Started.Before(plan.Created.Add(sessionMargin)) {
			logf("a %q on %q (pid %d) started before the prune plan: deferring deletion to a later prune", s.Kind, s.Host, s.PID)
			return false, nil
		}
	}
	// Rescue: points committed since the plan may use what it condemns.
	chunks, manifests, _, err := referenced(ctx, v, nil)
	if err != nil {
		return false, err
	}
	condemnedIdx := map[chunk.ID]bool{}
	for _, id := range plan.Indexes {
		condemnedIdx[id] = true
	}
	condemnedPack := map[chunk.ID]bool{}
	for _, id := range plan.Packs {
		condemnedPack[id] = true
	}
	rescue := ""
	for _, id := range plan.Manifests {
		if manifests[id] {
			rescue = "manifest " + id.Short()
		}
	}
	if rescue == "" {
		ids, err := v.ListIDs(ctx, vault.KindIndex)
		if err != nil {
			return false, err
		}
		// Strike every referenced chunk a surviving location holds; any
		// left over would be lost.
		for _, id := range ids {
			if condemnedIdx[id] {
				continue
			}
			f, err := v.LoadIndexFile(ctx, id)
			if blob.IsNotExist(err) {
				continue
			}
			if err != nil {
				return false, err
			}
			for _, p := range f.Packs {
				if !condemnedPack[p.ID] {
					for _, e := range p.Entries {
						delete(chunks, e.ID)
					}
				}
			}
		}
		for id := range chunks {
			rescue = "chunk " + id.Short()
			break
		}
	}
	if rescue != "" {
		logf("a point committed since the plan uses %s: abandoning the plan", rescue)
		err := v.Store().Delete(ctx, vault.ObjectName(vault.KindCondemned, plan.ID))
		return err == nil, err
	}
	planID := plan.ID
	if v.Lock() != nil {
		scratch := &PruneReport{}
		if plan, err = planAroundLocks(ctx, v, plan, scratch); err != nil {
			return false, err
		}
		if scratch.LockedObjects > 0 && resumed {
			rep.LockedObjects += scratch.LockedObjects
			if rep.LockedUntil.IsZero() || scratch.LockedUntil.Before(rep.LockedUntil) {
				rep.LockedUntil = scratch.LockedUntil
			}
		}
	}
	// Index objects first, then packs, manifests, and the plan last.
	for _, id := range plan.Indexes {
		if err := v.Store().Delete(ctx, vault.ObjectName(vault.KindIndex, id)); err != nil {
			return false, err
		}
	}
	for _, id := range plan.Packs {
		if err := v.Store().Delete(ctx, chunk.PackName(id)); err != nil {
			return false, err
		}
	}
	for _, id := range plan.Manifests {
		if err := v.Store().Delete(ctx, vault.ObjectName(vault.KindManifest, id)); err != nil {
			return false, err
		}
	}
	if err := v.Store().Delete(ctx, vault.ObjectName(vault.KindCondemned, planID)); err != nil {
		return false, err
	}
	logf("deleted %d packs, %d index objects, %d manifests", len(plan.Packs), len(plan.Indexes), len(plan.Manifests))
	return true, nil
}
