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
	if err := m.finishJob(ctx, sub, jobID); err != nil {
		return fmt.Errorf("streaming into %s: %w", node, err)
	}
	return nil
}
