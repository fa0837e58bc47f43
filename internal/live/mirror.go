package live

import (
	"context"
	"fmt"
	"strings"

	"lifeboat/internal/qmp"
)

// MirrorJobPrefix starts the job IDs of the mirrors that replication's
// mirror capture runs (internal/replicate).
const MirrorJobPrefix = "lbrep-mirror-"

// handOverMirrors ends the replication mirrors running in QEMU, so the
// backup can fleece the disks: QEMU 7.2 refuses any other block job on a
// disk a mirror runs on ("Node 'd0' is busy: block device is in use by
// block job: mirror"), and a mirror cannot start while a fleecing filter
// sits on the disk ("Need a root block node"). Nothing is lost: the
// replication runner keeps a dirty bitmap recording under its mirror; it
// notices the mirror is gone, sends the blocks written since the last cut
// its target acknowledged from that bitmap, and starts the mirror again
// once the backup released QEMU. It returns the jobs it ended.
func handOverMirrors(ctx context.Context, mon *qmp.Monitor) ([]string, error) {
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing QEMU's jobs: %w", err)
	}
	var ended []string
	// Every disk's mirror is cancelled before any is waited for: from one
	// disk's mirror ending to the next's, the machine's journal holds the
	// writes of some disks and not others, and a journal batch cut then
	// would not be crash-consistent across the disks. Cancelled back to
	// back that window is a QMP round trip, not a job's wind-down.
	for _, jb := range jobs {
		if strings.HasPrefix(jb.ID, MirrorJobPrefix) && jb.Status != "concluded" {
			// A job already failing refuses the cancel and concludes
			// by itself: waited for either way.
			mon.BlockJobCancel(ctx, jb.ID, true)
		}
	}
	for _, jb := range jobs {
		if !strings.HasPrefix(jb.ID, MirrorJobPrefix) {
			continue
		}
		if err := qmp.WaitJobConcluded(ctx, mon, jb.ID); err != nil {
			return ended, err
		}
		if err := mon.JobDismiss(ctx, jb.ID); err != nil && !qmp.IsClass(err, "GenericError") {
			return ended, fmt.Errorf("dismissing replication's mirror %s: %w", jb.ID, err)
		}
		ended = append(ended, jb.ID)
	}
	// The mirrors' target nodes (named with qmp.FleeceNodePrefix) are
	// unused now: RemoveStaleFleecing removes them.
	return ended, nil
}
