package backup

import (
	"context"
	"fmt"

	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// extendLocks, in a vault with an object lock, extends the lock of every
// pack holding a chunk of the new point: its new packs were stored locked,
// but the chunks it shares with older points sit in packs whose lock may
// end sooner (vault.ExtendLocks). The point is committed only after.
func extendLocks(ctx context.Context, v *vault.Vault, ix *chunk.Index, states []*diskState) error {
	if v.Lock() == nil {
		return nil
	}
	seen := map[chunk.ID]bool{}
	var names []string
	for _, st := range states {
		for _, id := range st.manifest.IDs {
			if id.IsZero() {
				continue
			}
			pack, _, ok := ix.Lookup(id)
			if ok && !seen[pack] {
				seen[pack] = true
				names = append(names, chunk.PackName(pack))
			}
		}
	}
	if _, err := v.ExtendLocks(ctx, names); err != nil {
		return fmt.Errorf("locking the packs the point needs: %w", err)
	}
	return nil
}
