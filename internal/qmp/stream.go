package qmp

import (
	"context"
	"fmt"
)

// BlockStream copies everything node reads through its backing chain into
// node itself and drops the backing (block-stream with no base), waiting
// until the job has ended. The guest keeps running meanwhile.
func (m *Monitor) BlockStream(ctx context.Context, jobID, node string) error {
	sub := m.Events("JOB_STATUS_CHANGE")
	defer sub.Close()
	if err := m.Execute(ctx, "block-stream", map[string]any{"job-id": jobID, "device": node, "auto-dismiss": false}, nil); err != nil {
		return fmt.Errorf("streaming into %s: %w", node, err)
	}
	if _, err := waitJobStatus(ctx, sub, jobID, "concluded"); err != nil {
		return fmt.Errorf("streaming into %s: %w", node, err)
	}
	jobs, err := m.QueryJobs(ctx)
	if err != nil {
		return fmt.Errorf("streaming into %s: %w", node, err)
	}
	var jobErr string
	for _, j := range jobs {
		if j.ID == jobID {
			jobErr = j.Error
		}
	}
	if err := m.JobDismiss(ctx, jobID); err != nil {
		return fmt.Errorf("streaming into %s: %w", node, err)
	}
	if jobErr != "" {
		return fmt.Errorf("streaming into %s failed: %s", node, jobErr)
	}
	return nil
}
