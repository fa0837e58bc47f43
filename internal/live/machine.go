package live

import (
	"context"
	"encoding/json"

	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
)

// What continuous replication (internal/replicate) shares with the live
// backup: the same disk names, the same claim on QEMU's NBD server, the
// same definition and the same guest quiescing.

// MachineDisk is a disk of a running machine under the name lifeboat gives
// it (the device id for qemu-system, the node name for a storage daemon).
type MachineDisk struct {
	qmp.Disk
	Name string
}

// MachineDisks lists the running machine's disks, named.
func MachineDisks(ctx context.Context, mon *qmp.Monitor) ([]MachineDisk, error) {
	ds, err := selectDisks(ctx, mon, nil)
	if err != nil {
		return nil, err
	}
	out := make([]MachineDisk, len(ds))
	for i, d := range ds {
		out[i] = MachineDisk{d.Disk, d.name}
	}
	return out, nil
}

// ClaimNBDServer frees QEMU's one NBD server for lifeboat's exports, or
// fails naming the exports of whoever else uses it.
func ClaimNBDServer(ctx context.Context, mon *qmp.Monitor) error { return claimNBDServer(ctx, mon) }

// MachineDefinition describes the running machine (CPUs, memory, disks);
// nil for a storage daemon.
func MachineDefinition(ctx context.Context, mon *qmp.Monitor, machine string, disks []MachineDisk) json.RawMessage {
	ds := make([]liveDisk, len(disks))
	for i, d := range disks {
		ds[i] = liveDisk{d.Disk, d.Name}
	}
	return definitionOf(ctx, mon, machine, ds)
}

// Quiesce freezes the guest's filesystems through its guest agent (file)
// after the pre-hook (app), as opts.Consistency asks; it returns what it
// achieved, notes on what it could not, and the undo to run right after
// the instant.
func Quiesce(ctx context.Context, opts Options) (recovery.Consistency, []string, func() error) {
	return quiesceGuest(ctx, opts)
}
