package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/discover"
)

// machineDiscoverCommand asks an agent which QEMU machines run on its host.
func (a *app) machineDiscoverCommand(r *remote) *cobra.Command {
	var body api.DiscoverJSON
	cmd := &cobra.Command{
		Use:   "discover [--agent NAME] [--under DIR]",
		Short: "List the running QEMU machines of an agent's host, to add with --qmp",
		Long: `Ask an agent (the server's built-in agent unless --agent names another) for the
QEMU machines running on its host: qemu-system and qemu-storage-daemon
processes with a QMP unix socket (-qmp, -chardev with -mon mode=control,
--monitor), read from /proc, and QMP sockets found in /run/qemu* — each with its
name (-name), guest agent socket and disks, probed over QMP. A socket busy with
another QMP client is listed with the reason. Sockets under libvirt's
directories are left to libvirt. --under keeps only the sockets under a
directory. Add one with:

  lifeboat machine add NAME --qmp SOCKET [--guest-agent SOCKET] --agent AGENT`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(r)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var j catalog.Job
			if err := c.Do(ctx, "POST", "/v1/discover", body, &j); err != nil {
				return err
			}
			for j.State == catalog.Queued || j.State == catalog.Running {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
				if err := c.Do(ctx, "GET", "/v1/jobs/"+j.ID, nil, &j); err != nil {
					return err
				}
			}
			if j.State != catalog.Succeeded {
				return fmt.Errorf("discover job %s on agent %s %s: %s", j.ID, j.Agent, j.State, j.Error)
			}
			var res struct {
				Machines []discover.Machine `json:"machines"`
			}
			if err := json.Unmarshal(j.Result, &res); err != nil {
				return fmt.Errorf("discover job %s: result: %w", j.ID, err)
			}
			if a.jsonOut {
				return a.printJSON(res.Machines)
			}
			a.table("NAME\tQMP\tGUEST AGENT\tDISKS\tPID\tNOTE", func(w *tabwriter.Writer) {
				for _, m := range res.Machines {
					pid := "-"
					if m.PID != 0 {
						pid = fmt.Sprint(m.PID)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.QMP, orDash(m.GuestAgent), orDash(strings.Join(m.Disks, ",")), pid, orDash(m.Error))
				}
			})
			return nil
		},
	}
	cmd.Flags().StringVar(&body.Agent, "agent", "", "the agent whose host is searched (default: the server's built-in agent)")
	cmd.Flags().StringVar(&body.Under, "under", "", "keep only the QMP sockets under this directory")
	return cmd
}
