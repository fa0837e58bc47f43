package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"lifeboat/internal/api"
	"lifeboat/internal/discover"
)

// machineDiscoverCommand asks an agent which QEMU machines run on its host.
func (a *app) machineDiscoverCommand(r *remote) *cobra.Command {
	var body api.DiscoverJSON
	cmd := &cobra.Command{
		Use:   "discover [--agent NAME] [--under DIR]",
		Short: "List the running QEMU machines of an agent's host, to add with --qmp",
		Long:  help("machine-discover"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(r)
			if err != nil {
				return err
			}
			machines, err := c.Discover(cmd.Context(), body)
			if err != nil {
				return err
			}
			return a.emit(machines, func() {
				table(a, "NAME\tQMP\tGUEST AGENT\tDISKS\tPID\tNOTE", machines, func(m discover.Machine) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", m.Name, m.QMP, orDash(m.GuestAgent), orDash(strings.Join(m.Disks, ",")), m.PIDText(), orDash(m.Error))
				})
			})
		},
	}
	cmd.Flags().StringVar(&body.Agent, "agent", "", "the agent whose host is searched (default: the server's built-in agent)")
	cmd.Flags().StringVar(&body.Under, "under", "", "keep only the QMP sockets under this directory")
	return cmd
}
