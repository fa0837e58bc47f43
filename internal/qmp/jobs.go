package qmp

import (
	"context"
	"fmt"
	"time"
)

// BlockJobInfo is one block job (query-block-jobs).
type BlockJobInfo struct {
	Type         string `json:"type"`   // backup, mirror, commit, stream
	Device       string `json:"device"` // the job id
	Len          int64  `json:"len"`
	Offset       int64  `json:"offset"`
	Busy         bool   `json:"busy"`
	Paused       bool   `json:"paused"`
	Speed        int64  `json:"speed"`
	IOStatus     string `json:"io-status"`
	Ready        bool   `json:"ready"`
	Status       string `json:"status"` // created, running, paused, ready, standby, waiting, pending, aborting, concluded, null
	AutoFinalize bool   `json:"auto-finalize"`
	AutoDismiss  bool   `json:"auto-dismiss"`
	Error        string `json:"error"`
}

// JobInfo is one job of any kind (query-jobs).
type JobInfo struct {
	ID              string `json:"id"`
	Type            string `json:"type"`
	Status          string `json:"status"`
	CurrentProgress int64  `json:"current-progress"`
	TotalProgress   int64  `json:"total-progress"`
	Error           string `json:"error"`
}

// JobStatusChange is the data of a JOB_STATUS_CHANGE event.
type JobStatusChange struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// QueryBlockJobs lists the running block jobs.
func (m *Monitor) QueryBlockJobs(ctx context.Context) ([]BlockJobInfo, error) {
	var out []BlockJobInfo
	if err := m.Execute(ctx, "query-block-jobs", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// QueryJobs lists all jobs, including concluded ones not yet dismissed.
func (m *Monitor) QueryJobs(ctx context.Context) ([]JobInfo, error) {
	var out []JobInfo
	if err := m.Execute(ctx, "query-jobs", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// JobDismiss removes a concluded job (one started with auto-dismiss off).
func (m *Monitor) JobDismiss(ctx context.Context, id string) error {
	return m.Execute(ctx, "job-dismiss", map[string]string{"id": id}, nil)
}

// BlockJobCancel cancels a block job and waits until it has ended: its
// status became "concluded" (auto-dismiss off: dismiss it with JobDismiss)
// or "null" (gone). force cancels a paused job without resuming it first.
func (m *Monitor) BlockJobCancel(ctx context.Context, id string, force bool) error {
	sub := m.Events("JOB_STATUS_CHANGE")
	defer sub.Close()
	args := map[string]any{"device": id}
	if force {
		args["force"] = true
	}
	if err := m.Execute(ctx, "block-job-cancel", args, nil); err != nil {
		return fmt.Errorf("cancelling block job %s: %w", id, err)
	}
	if _, err := waitJobStatus(ctx, sub, id, "concluded", "null"); err != nil {
		return fmt.Errorf("cancelling block job %s: %w", id, err)
	}
	return nil
}

// BlockdevCreate runs a blockdev-create job (creating an image file or
// formatting a node) to its end, dismisses it and returns the job's error.
// options is the BlockdevCreateOptions object, e.g.
// {"driver": "file", "filename": "/x.qcow2", "size": 0}.
func (m *Monitor) BlockdevCreate(ctx context.Context, jobID string, options any) error {
	sub := m.Events("JOB_STATUS_CHANGE")
	defer sub.Close()
	if err := m.Execute(ctx, "blockdev-create", map[string]any{"job-id": jobID, "options": options}, nil); err != nil {
		return err
	}
	if err := m.finishJob(ctx, sub, jobID); err != nil {
		return fmt.Errorf("blockdev-create job %s: %w", jobID, err)
	}
	return nil
}

// finishJob waits until job id (started with auto-dismiss off, its
// JOB_STATUS_CHANGE events on sub) has concluded, dismisses it and returns
// the job's own error.
func (m *Monitor) finishJob(ctx context.Context, sub *Subscription, id string) error {
	if _, err := waitJobStatus(ctx, sub, id, "concluded"); err != nil {
		return err
	}
	jobs, err := m.QueryJobs(ctx)
	if err != nil {
		return err
	}
	var jobErr string
	for _, j := range jobs {
		if j.ID == id {
			jobErr = j.Error
		}
	}
	if err := m.JobDismiss(ctx, id); err != nil {
		return err
	}
	if jobErr != "" {
		return fmt.Errorf("failed: %s", jobErr)
	}
	return nil
}

// waitJobStatus waits for a JOB_STATUS_CHANGE of job id to one of statuses.
func waitJobStatus(ctx context.Context, sub *Subscription, id string, statuses ...string) (string, error) {
	var got string
	_, err := WaitEvent(ctx, sub, func(ev Event) bool {
		var d JobStatusChange
		if ev.Decode(&d) != nil || d.ID != id {
			return false
		}
		for _, s := range statuses {
			if d.Status == s {
				got = s
				return true
			}
		}
		return false
	})
	return got, err
}

// WaitJobConcluded polls until job id is concluded or gone, for at most
// 20 s: for a job that ends by itself (one failing refuses a cancel).
func WaitJobConcluded(ctx context.Context, mon *Monitor, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		jobs, err := mon.QueryJobs(ctx)
		if err != nil {
			return fmt.Errorf("waiting for job %s to end: %w", id, err)
		}
		done := true
		for _, jb := range jobs {
			if jb.ID == id && jb.Status != "concluded" {
				done = false
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for job %s to end: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
