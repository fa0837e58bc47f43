package qmp

import "context"

// Status is the run state of a machine (query-status). qemu-storage-daemon
// has no run state and answers CommandNotFound.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, prelaunch, shutdown, ...
}

// QueryStatus returns the machine's run state.
func (m *Monitor) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := m.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the guest's CPUs.
func (m *Monitor) Stop(ctx context.Context) error { return m.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's CPUs.
func (m *Monitor) Cont(ctx context.Context) error { return m.Execute(ctx, "cont", nil, nil) }

// HumanMonitorCommand runs an HMP command (qemu-system only) and returns
// its output. For diagnostics; nothing should parse it.
func (m *Monitor) HumanMonitorCommand(ctx context.Context, command string) (string, error) {
	var out string
	err := m.Execute(ctx, "human-monitor-command", map[string]string{"command-line": command}, &out)
	return out, err
}
