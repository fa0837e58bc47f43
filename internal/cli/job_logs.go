package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/agent"
	"lifeboat/internal/catalog"
)

// progressText is a running job's progress for the job list ("-" for
// others, and before the agent reported any).
func progressText(j catalog.Job) string {
	var p agent.Progress
	if j.State != catalog.Running || json.Unmarshal(j.Progress, &p) != nil {
		return "-"
	}
	return p.Text()
}

// jobLogsCommand is `lifeboat job logs ID [--follow]`.
func (a *app) jobLogsCommand(r *remote) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID [--follow]",
		Short: "Print a job's log (ID or the first 8+ digits of it, as job list shows)",
		Long: `Print the log a job's agent sent: a line each, with its time and level.
--follow keeps printing new lines until the job ends (succeeded, failed or
cancelled), then exits 0 if it succeeded and 1 otherwise. --json prints the
lines as a JSON array (without --follow).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(r)
			if err != nil {
				return err
			}
			path := "/v1/jobs/" + url.PathEscape(args[0])
			var after int64
			for {
				var lines []catalog.LogLine
				if err := c.Do(ctx, "GET", fmt.Sprintf("%s/logs?after=%d", path, after), nil, &lines); err != nil {
					return err
				}
				if a.jsonOut && !follow {
					return a.printJSON(lines)
				}
				for _, l := range lines {
					a.printf("%s  %-5s  %s\n", l.Time.Local().Format("2006-01-02 15:04:05"), l.Level, l.Message)
					after = max(after, l.Seq)
				}
				if !follow {
					return nil
				}
				var j catalog.Job
				if err := c.Do(ctx, "GET", path, nil, &j); err != nil {
					return err
				}
				if j.State != catalog.Queued && j.State != catalog.Running {
					if len(lines) > 0 {
						continue // the last lines first
					}
					if j.State != catalog.Succeeded {
						return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
					}
					return nil
				}
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&follow, "follow", false, "print new lines until the job ends")
	return cmd
}
