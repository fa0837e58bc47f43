package cli

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"lifeboat/internal/replicate"
)

// replicatePauseCommands are replicate pause and replicate resume.
func (a *app) replicatePauseCommands() []*cobra.Command {
	newCmd := func(verb string, paused bool, short string) *cobra.Command {
		var machine, group string
		cmd := &cobra.Command{
			Use:   verb + " --machine NAME|--group GROUP",
			Short: short,
			Long:  help("replicate-" + verb),
			Args:  cobra.NoArgs,
			RunE: a.withReplication(func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
				if (machine == "") == (group == "") {
					return usageError{errors.New("give --machine or --group")}
				}
				names, err := cfg.SetPaused(machine, group, paused)
				if err != nil {
					return err
				}
				state := map[bool]string{true: "paused", false: "resumed"}[paused]
				return a.emit(map[string]any{"machines": names, "paused": paused}, func() {
					if !a.quiet {
						a.printf("replication of %s %s\n", strings.Join(names, ", "), state)
					}
				})
			}),
		}
		cmd.Flags().StringVar(&machine, "machine", "", "the machine")
		cmd.Flags().StringVar(&group, "group", "", "every member of this replication group")
		return cmd
	}
	return []*cobra.Command{
		newCmd("pause", true, "Stop shipping a machine's writes until resumed (it keeps tracking them)"),
		newCmd("resume", false, "Resume a paused replication: what was written meanwhile is sent"),
	}
}
