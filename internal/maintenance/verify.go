// Package maintenance keeps a vault healthy: verify checks it, forget
// applies retention, prune removes what no point needs (docs/format.md,
// "Write ordering", "Prune").
package maintenance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Problem is one thing verify found wrong, naming the object.
type Problem struct {
	Object string `json:"object"`
	Error  string `json:"error"`
}

// VerifyReport is verify's result.
type VerifyReport struct {
	Points        int       `json:"points"`
	Manifests     int       `json:"manifests"`
	IndexObjects  int       `json:"index_objects"`
	Packs         int       `json:"packs"`
	Chunks        int       `json:"chunks"`
	ReadDataBytes int64     `json:"read_data_bytes"`
	Problems      []Problem `json:"problems"`
	Warnings      []string  `json:"warnings"`
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	ReadData bool // read and check every pack and blob
	// Progress, if set, is called with the pack bytes checked so far and
	// the total, when ReadData.
	Progress func(done, total int64)
}

type reporter struct {
	mu sync.Mutex
	r  *VerifyReport
}

func (rp *reporter) problem(object string, err error) {
	rp.mu.Lock()
	rp.r.Problems = append(rp.r.Problems, Problem{Object: object, Error: err.Error()})
	rp.mu.Unlock()
}

// Verify checks the vault's structure: every index object, point and
// manifest opens, every chunk a point references is indexed in a pack that
// exists and is big enough; with ReadData, every pack hashes to its name and
// every blob decrypts to its ID. Storage errors that stop the check are
// returned; problems with objects are listed in the report.
func Verify(ctx context.Context, v *vault.Vault, opts VerifyOptions) (*VerifyReport, error) {
	rep := &VerifyReport{Problems: []Problem{}, Warnings: []string{}}
	rp := &reporter{r: rep}

	packs, err := v.ListPacks(ctx)
	if err != nil {
		return nil, err
	}
	packSize := map[chunk.ID]int64{}
	for _, p := range packs {
		packSize[p.ID] = p.Size
	}
	rep.Packs = len(packs)

	plans, err := v.Plans(ctx)
	if err != nil {
		return nil, err
	}
	condemned := vault.CondemnedPacks(plans)
	if len(plans) > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d unfinished prune plan(s): the next prune completes them", len(plans)))
	}

	// Index objects, one by one so a bad one is named.
	ids, err := v.ListIDs(ctx, vault.KindIndex)
	if err != nil {
		return nil, err
	}
	rep.IndexObjects = len(ids)
	ix := chunk.NewIndex()
	packEnd := map[chunk.ID]int64{}
	var mu sync.Mutex
	err = vault.Parallel(ctx, 8, ids, func(ctx context.Context, id chunk.ID) error {
		f, err := v.LoadIndexFile(ctx, id)
		if err != nil {
			if isStorage(err) {
				return err
			}
			rp.problem(vault.ObjectName(vault.KindIndex, id), err)
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range f.Packs {
			ix.Add(p.ID, p.Entries)
			for _, e := range p.Entries {
				packEnd[p.ID] = max(packEnd[p.ID], int64(e.Offset)+int64(e.Length))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.Chunks = ix.Len()
	for id, end := range packEnd {
		size, ok := packSize[id]
		switch {
		case !ok && condemned[id]:
		case !ok:
			rp.problem(chunk.PackName(id), errors.New("pack is named by the index but missing"))
		case end+4 > size:
			rp.problem(chunk.PackName(id), fmt.Errorf("pack is %d bytes but the index locates data up to %d", size, end))
		}
	}
	unindexed := 0
	for _, p := range packs {
		if !ix.HasPack(p.ID) && !condemned[p.ID] {
			unindexed++
		}
	}
	if unindexed > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d pack(s) in no index, left by a backup that was interrupted or is still running: the next backup after an interrupted one reuses them, prune removes what no point needs", unindexed))
	}

	partial, err := leftoverWarnings(ctx, v)
	if err != nil {
		return nil, err
	}
	rep.Warnings = append(rep.Warnings, partial...)

	// Points and their manifests.
	pointIDs, err := v.ListIDs(ctx, vault.KindPoint)
	if err != nil {
		return nil, err
	}
	rep.Points = len(pointIDs)
	err = vault.Parallel(ctx, 4, pointIDs, func(ctx context.Context, id chunk.ID) error {
		name := vault.ObjectName(vault.KindPoint, id)
		p, err := recovery.Load(ctx, v, id)
		if err != nil {
			if isStorage(err) {
				return err
			}
			rp.problem(name, err)
			return nil
		}
		for _, d := range p.Disks {
			m, err := image.Load(ctx, v, d.Manifest, d.Size, d.ChunkSize)
			if err != nil {
				if isStorage(err) {
					return err
				}
				rp.problem(vault.ObjectName(vault.KindManifest, d.Manifest), fmt.Errorf("point %s disk %s: %w", id.Short(), d.Name, err))
				continue
			}
			mu.Lock()
			rep.Manifests++
			mu.Unlock()
			if m.Size != d.Size {
				rp.problem(vault.ObjectName(vault.KindManifest, d.Manifest), fmt.Errorf("manifest size %d, point says %d", m.Size, d.Size))
			}
			missing := 0
			var first chunk.ID
			for _, cid := range m.IDs {
				if !cid.IsZero() && !ix.Has(cid) {
					if missing == 0 {
						first = cid
					}
					missing++
				}
			}
			if missing > 0 {
				rp.problem(name, fmt.Errorf("machine %s disk %s: %d chunk(s) are in no index, first %s", p.Machine, d.Name, missing, first))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	if opts.ReadData {
		var total int64
		for _, p := range packs {
			total += p.Size
		}
		var dmu sync.Mutex
		err = vault.Parallel(ctx, vault.Workers(), packs, func(ctx context.Context, p vault.PackInfo) error {
			n, err := checkPack(ctx, v, p, ix)
			if err != nil {
				if isStorage(err) {
					return err
				}
				rp.problem(chunk.PackName(p.ID), err)
			}
			dmu.Lock()
			rep.ReadDataBytes += n
			if opts.Progress != nil {
				opts.Progress(rep.ReadDataBytes, total)
			}
			dmu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Object < rep.Problems[j].Object })
	return rep, nil
}

// isStorage tells storage failures (stop) from bad objects (report).
func isStorage(err error) bool {
	return err != nil && !errors.Is(err, chunk.ErrCorrupt) && !blob.IsNotExist(err)
}

// checkPack reads one pack whole and checks its hash, header and blobs.
func checkPack(ctx context.Context, v *vault.Vault, p vault.PackInfo, ix *chunk.Index) (int64, error) {
	name := chunk.PackName(p.ID)
	data, err := v.Store().Get(ctx, name)
	if err != nil {
		return 0, err
	}
	// A pack that does not hash to its name is damaged; its blobs are
	// still checked, to name the chunks lost and say whether they have an
	// intact copy elsewhere.
	var hashErr error
	if chunk.ObjectID(data) != p.ID {
		hashErr = fmt.Errorf("content does not match its name (hashes to %s): %w", chunk.ObjectID(data).Short(), chunk.ErrCorrupt)
	}
	hl, err := chunk.PackHeaderLength(data[max(0, len(data)-4):], int64(len(data)))
	if err != nil {
		return int64(len(data)), cmp.Or(hashErr, err)
	}
	end := int64(len(data)) - 4 - hl
	entries, err := chunk.ParsePackHeader(v.Codec(), data[end:len(data)-4], end)
	if err != nil {
		return int64(len(data)), cmp.Or(hashErr, err)
	}
	var buf []byte
	for _, e := range entries {
		buf, err = v.Codec().DecodeBlob(buf, e.ID, data[e.Offset:e.Offset+e.Length], int(e.RawLength))
		if err != nil {
			// Say whether restores can do without this copy.
			bad := chunk.PackLocation{Pack: p.ID, Loc: chunk.Location{Offset: e.Offset, Length: e.Length}}
			if _, _, oerr := v.ReadBlob(ctx, e.ID, ix.Locations(e.ID), &bad, nil); oerr == nil {
				err = fmt.Errorf("%w (another copy of the chunk is intact: restores read that one)", err)
			} else if isStorage(oerr) {
				return int64(len(data)), oerr
			} else {
				err = fmt.Errorf("%w (no intact copy elsewhere: points using it cannot be restored)", err)
			}
			if hashErr != nil {
				err = fmt.Errorf("%w; %w", hashErr, err)
			}
			return int64(len(data)), err
		}
	}
	return int64(len(data)), hashErr
}
