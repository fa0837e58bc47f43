// Package qmp is a client for the QEMU Machine Protocol, the JSON control
// socket of qemu-system-* and qemu-storage-daemon, with typed helpers for
// what a backup needs and the fleecing recipe the backup engine uses.
//
// # Connection
//
// A QMP socket serves one client at a time, and events are not replayed to
// a client that connects later. So lifeboat keeps one Monitor per socket:
// Dial reads the greeting (QEMU's version), negotiates capabilities and
// starts a single reader goroutine that routes each reply to its caller by
// id and each event to the subscriptions that asked for it. Execute is safe
// for concurrent use; a cancelled Execute returns at once and its late reply
// is dropped. QEMU errors come back as *Error (Class, Desc) wrapped with the
// command name; a lost connection fails every waiting call with
// ErrDisconnected. A second Dial while another client holds the socket
// waits for a greeting that only comes when the first client leaves, so it
// fails when its context ends. Subscribe before running the command whose
// events you want; a subscriber that falls behind is ended with
// ErrEventOverflow rather than ever blocking the reader.
//
// # Fleecing (QEMU 7.2)
//
// Fleece takes a point-in-time image of a running machine's disks while
// the guest keeps writing, and serves it read-only over NBD with the dirty
// bitmap of the changes since the previous point. Per disk:
//
//  0. Beforehand: create a temporary qcow2 overlay of the disk's size
//     (blockdev-create of a file, blockdev-add of it, blockdev-create of
//     qcow2 on it) and blockdev-add it as a qcow2 node whose backing is the
//     disk's node. Reads of the overlay fall through to the disk.
//  1. One transaction for all disks (so all share one instant):
//     block-dirty-bitmap-add of the new bitmap "lifeboat-<next>"
//     (persistent when the node is qcow2, enabled): it records the writes
//     after the instant, for the next incremental backup;
//     block-dirty-bitmap-disable of the previous bitmap "lifeboat-<prev>":
//     frozen, it holds exactly the changes since the previous point;
//     blockdev-backup sync=none from the disk node to the overlay: from now
//     on, before the guest overwrites a block, its old content is copied
//     into the overlay, so the overlay shows the disk as of the instant.
//  2. block-export-add of the overlay over NBD, read-only, with
//     bitmaps: [prev]. QEMU finds the bitmap through the overlay's backing
//     chain; it must be disabled, since QEMU refuses an enabled bitmap on a
//     read-only export. Readers use "qemu:dirty-bitmap:<prev>" to find what
//     changed and read just those extents.
//  3. Teardown: block-export-del (hard), block-job-cancel of the backup job,
//     blockdev-del of the overlay and its file node, removal of the overlay
//     file; then, on success (FleeceSession.Commit), block-dirty-bitmap-remove
//     of the previous bitmap; on failure (FleeceSession.Close), a rollback
//     transaction that merges the new bitmap into the previous one,
//     re-enables it and removes the new one, so the next attempt still sees
//     every change since the last good point. Teardown runs even when the
//     caller's context was cancelled.
//
// Why blockdev-backup sync=none rather than a copy-before-write filter node:
// on 7.2 a filter added with blockdev-add must then be put between the disk
// and its users (the guest's device or an existing export), and 7.2 has no
// command to do that for a device (blockdev-replace came later). The backup
// job inserts the same copy-before-write filter itself ("#block<N>"),
// atomically inside the transaction. The transaction cannot use
// completion-mode "grouped": 7.2 refuses it for bitmap actions, and with a
// sync=none job there is nothing to complete anyway. A fleecing job that
// dies (say, the overlay's file system filled up) means the export no
// longer shows the instant; Commit checks the jobs ran throughout and
// otherwise fails with ErrFleeceBroken.
//
// # Bitmaps after a crash (observed on QEMU 7.2)
//
// A persistent bitmap is written into the qcow2 only when QEMU closes the
// image cleanly; on opening an image for writing, QEMU marks the stored
// bitmaps in-use. After kill -9 or a host crash, a bitmap stored by an
// earlier clean shutdown comes back with "inconsistent": true and cannot be
// used except to remove it; a bitmap added since the image was last opened
// is gone; non-persistent bitmaps never survive a restart. Fleece reports
// the first case as ErrBitmapInconsistent and a missing one as
// ErrBitmapMissing; the engine then removes what is left and takes a full
// backup.
//
// # Disks
//
// Monitor.Disks enumerates a machine's disks: for qemu-system the devices
// of query-block that have a medium; for qemu-storage-daemon, which has no
// devices, the named nodes with no named parent (see Disks for the rule).
package qmp
