package qmp

import (
	"context"
	"fmt"
	"strings"
)

// Action is one action of a transaction. Build it with the constructors.
type Action struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

func (a Action) String() string { return a.Type }

// BitmapAddOptions are the options of BitmapAdd.
type BitmapAddOptions struct {
	// Persistent stores the bitmap in the image (qcow2 only) when QEMU
	// closes it, so it survives a clean restart.
	Persistent bool
	// Disabled creates the bitmap not recording writes.
	Disabled bool
	// Granularity in bytes, a power of two; 0 leaves QEMU's default (the
	// cluster size for qcow2, 64 KiB otherwise).
	Granularity uint32
}

type bitmapRef struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

// BitmapAdd is block-dirty-bitmap-add.
func BitmapAdd(node, name string, o BitmapAddOptions) Action {
	type args struct {
		bitmapRef
		Persistent  bool   `json:"persistent,omitempty"`
		Disabled    bool   `json:"disabled,omitempty"`
		Granularity uint32 `json:"granularity,omitempty"`
	}
	return Action{"block-dirty-bitmap-add", args{bitmapRef{node, name}, o.Persistent, o.Disabled, o.Granularity}}
}

// BitmapRemove is block-dirty-bitmap-remove (also removes a persistent
// bitmap from the image).
func BitmapRemove(node, name string) Action {
	return Action{"block-dirty-bitmap-remove", bitmapRef{node, name}}
}

// BitmapClear is block-dirty-bitmap-clear.
func BitmapClear(node, name string) Action {
	return Action{"block-dirty-bitmap-clear", bitmapRef{node, name}}
}

// BitmapEnable is block-dirty-bitmap-enable.
func BitmapEnable(node, name string) Action {
	return Action{"block-dirty-bitmap-enable", bitmapRef{node, name}}
}

// BitmapDisable is block-dirty-bitmap-disable.
func BitmapDisable(node, name string) Action {
	return Action{"block-dirty-bitmap-disable", bitmapRef{node, name}}
}

// BitmapMerge is block-dirty-bitmap-merge: target |= each source, all
// bitmaps of the same node.
func BitmapMerge(node, target string, sources ...string) Action {
	return Action{"block-dirty-bitmap-merge", struct {
		Node    string   `json:"node"`
		Target  string   `json:"target"`
		Bitmaps []string `json:"bitmaps"`
	}{node, target, sources}}
}

// BackupOptions are the arguments of blockdev-backup.
type BackupOptions struct {
	JobID  string `json:"job-id,omitempty"`
	Device string `json:"device"` // source node
	Target string `json:"target"` // target node
	// Sync is "none" (copy only what the guest overwrites: fleecing),
	// "full", "top" or "incremental"/"bitmap" (with Bitmap).
	Sync   string `json:"sync"`
	Bitmap string `json:"bitmap,omitempty"`
	// AutoFinalize and AutoDismiss default to true in QEMU when nil.
	AutoFinalize *bool `json:"auto-finalize,omitempty"`
	AutoDismiss  *bool `json:"auto-dismiss,omitempty"`
	Speed        int64 `json:"speed,omitempty"`
	// OnSourceError / OnTargetError: report (default), ignore, enospc, stop.
	OnSourceError string `json:"on-source-error,omitempty"`
	OnTargetError string `json:"on-target-error,omitempty"`
}

// BlockdevBackup is the blockdev-backup action.
func BlockdevBackup(o BackupOptions) Action {
	return Action{"blockdev-backup", o}
}

// Transaction runs the actions atomically: all succeed or none has any
// effect. Jobs it starts complete independently of each other.
func (m *Monitor) Transaction(ctx context.Context, actions ...Action) error {
	return m.transaction(ctx, "", actions)
}

// GroupedTransaction runs the actions with completion-mode "grouped": if
// one job the transaction starts fails or is cancelled, all of them are.
// QEMU 7.2 refuses grouped mode when any dirty bitmap action is present
// ("Action 'block-dirty-bitmap-add' does not support Transaction property
// completion-mode = grouped"), so the fleecing recipe uses Transaction.
func (m *Monitor) GroupedTransaction(ctx context.Context, actions ...Action) error {
	return m.transaction(ctx, "grouped", actions)
}

func (m *Monitor) transaction(ctx context.Context, mode string, actions []Action) error {
	args := map[string]any{"actions": actions}
	if mode != "" {
		args["properties"] = map[string]string{"completion-mode": mode}
	}
	if err := m.Execute(ctx, "transaction", args, nil); err != nil {
		names := make([]string, len(actions))
		for i, a := range actions {
			names[i] = a.Type
		}
		return fmt.Errorf("transaction [%s]: %w", strings.Join(names, ", "), err)
	}
	return nil
}
