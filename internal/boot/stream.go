package boot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"lifeboat/internal/qmp"
)

// StreamProgress is the state of the background copy of a running
// machine's disks into their own images.
type StreamProgress struct {
	DoneBytes, TotalBytes int64
	// Pending counts the disks not yet standalone.
	Pending int
}

// StreamDisk is one disk to make standalone: its format node and size.
type StreamDisk struct {
	Node string
	Size int64
}

// streamJob names the block-stream job of a node.
func streamJob(node string) string { return "lifeboat-stream-" + node }

// Stream makes each disk (a qcow2 overlay over a backing image) standalone
// while the guest runs: a block-stream job copies into the overlay every
// block it does not hold yet, then drops the backing from the image. The
// disks are copied one after the other: QEMU 7.2 crashed with two stream
// jobs over NBD backings at once, and querying the block graph while a
// stream job ends is not safe there either, so the graph is looked at only
// between jobs. A disk already without backing is done; a stream job
// already running (a previous lifeboat that was killed) is waited for,
// not restarted, at this call's speed; one that failed is started again,
// and copies only what is still missing. speed bounds the copy in bytes/s
// (0: no bound).
// progress is called about twice a second.
func Stream(ctx context.Context, mon *qmp.Monitor, disks []StreamDisk, speed int64, progress func(StreamProgress)) error {
	var total, done int64
	for _, d := range disks {
		total += d.Size
	}
	for i, d := range disks {
		report := func(cur int64) {
			if progress != nil {
				progress(StreamProgress{DoneBytes: done + cur, TotalBytes: total, Pending: len(disks) - i})
			}
		}
		started := false
		for {
			j, ok, err := findJob(ctx, mon, streamJob(d.Node))
			if err != nil {
				return err
			}
			if ok && j.Status == "concluded" {
				if err := mon.JobDismiss(ctx, j.ID); err != nil {
					return fmt.Errorf("dismissing job %s: %w", j.ID, err)
				}
				if j.Error != "" {
					return fmt.Errorf("copying disk node %s into its image: %s", d.Node, j.Error)
				}
				break // standalone
			}
			if !ok {
				if started {
					break // auto-dismissed by someone else: it concluded
				}
				n, err := mon.Node(ctx, d.Node)
				if err != nil {
					return fmt.Errorf("disk node %s: %w", d.Node, err)
				}
				if n.Image.BackingFilename == "" && n.BackingFile == "" {
					break // already standalone
				}
				args := map[string]any{"job-id": streamJob(d.Node), "device": d.Node, "auto-dismiss": false}
				if speed > 0 {
					args["speed"] = speed
				}
				if err := mon.Execute(ctx, "block-stream", args, nil); err != nil {
					return fmt.Errorf("starting the copy of disk node %s: %w", d.Node, err)
				}
				started = true
				report(0)
			} else {
				if !started {
					// A previous lifeboat's job: copy at this run's speed.
					if err := mon.Execute(ctx, "block-job-set-speed", map[string]any{"device": j.ID, "speed": speed}, nil); err != nil {
						return fmt.Errorf("setting the speed of the copy of disk node %s: %w", d.Node, err)
					}
					started = true
				}
				if j.TotalProgress > 0 {
					report(int64(float64(d.Size) * float64(j.CurrentProgress) / float64(j.TotalProgress)))
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-mon.Done():
				return errors.Join(errors.New("the machine's QMP connection closed during the copy"), mon.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
		done += d.Size
		report(0)
	}
	if progress != nil {
		progress(StreamProgress{DoneBytes: total, TotalBytes: total})
	}
	return nil
}

func findJob(ctx context.Context, mon *qmp.Monitor, id string) (qmp.JobInfo, bool, error) {
	jobs, err := mon.QueryJobs(ctx)
	if err != nil {
		return qmp.JobInfo{}, false, fmt.Errorf("listing block jobs: %w", err)
	}
	for _, j := range jobs {
		if j.ID == id {
			return j, true, nil
		}
	}
	return qmp.JobInfo{}, false, nil
}
