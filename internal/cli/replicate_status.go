package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"lifeboat/internal/api"
	"lifeboat/internal/replicate"
)

// localReplicationStatus prints this host's replications (status files).
func (a *app) localReplicationStatus(machine *string) func(*cobra.Command, []string, *replicate.Config) error {
	return func(cmd *cobra.Command, args []string, cfg *replicate.Config) error {
		out, err := cfg.Statuses(cmd.Context(), *machine, a.env.Clock.Now())
		if err != nil {
			return err
		}
		return a.emit(oneOrAll(*machine, out), func() {
			table(a, "MACHINE\t"+replicationHeader, out, func(st replicate.Status) string { return st.Machine + "\t" + replicationRow(st) })
		})
	}
}

// serverReplicationStatus prints the replications a server knows of
// (GET /v1/replications), or machine's.
func (a *app) serverReplicationStatus(cmd *cobra.Command, r *remote, machine string) error {
	c, err := a.client(r)
	if err != nil {
		return err
	}
	out, err := c.Replications(cmd.Context(), machine)
	if err != nil {
		return err
	}
	return a.emit(oneOrAll(machine, out), func() {
		table(a, "MACHINE\tAGENT\t"+replicationHeader, out, func(st api.ReplicationJSON) string {
			return st.Machine + "\t" + st.Agent + "\t" + replicationRow(st.Status)
		})
	})
}

// replicationHeader heads the columns of replicationRow.
const replicationHeader = "TARGET\tSTATE\tCAPTURE\tLAG\tCUT\tPOINTS\tHISTORY\tNOTE"

// replicationRow is a replication's state as both status tables show it.
func replicationRow(st replicate.Status) string {
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s", st.Target, st.StateText(), st.CaptureText(), st.LagText(), st.LastSeq, st.Points,
		size(st.JournalBytes), st.NoteText())
}

// oneOrAll is what status --json prints: the one machine's status when
// one was asked for, else the list.
func oneOrAll[T any](machine string, out []T) any {
	if machine != "" {
		return out[0]
	}
	return out
}

// serverEnableReplication records m's replication in the server's catalog
// for agent to run.
func (a *app) serverEnableReplication(cmd *cobra.Command, r *remote, agent string, m replicate.Machine) error {
	if agent == "" {
		return usageError{fmt.Errorf("--agent is required with --server: the agent whose host runs %s", m.Name)}
	}
	if m.PreHook != "" || m.PostHook != "" {
		return usageError{fmt.Errorf("--pre-hook and --post-hook are set on the machine's host (replicate enable there): a server does not make agents run commands")}
	}
	c, err := a.client(r)
	if err != nil {
		return err
	}
	out, err := c.EnableReplication(cmd.Context(), agent, m)
	if err != nil {
		return err
	}
	return a.emit(out, func() {
		if !a.quiet {
			a.printf("machine %s replicates to %s once agent %s (lifeboat agent --replicate) picks it up\n", m.Name, m.Target, agent)
		}
	})
}

// serverDisableReplication forgets a replication enabled through the server.
func (a *app) serverDisableReplication(cmd *cobra.Command, r *remote, machine string) error {
	c, err := a.client(r)
	if err != nil {
		return err
	}
	if err := c.DisableReplication(cmd.Context(), machine); err != nil {
		return err
	}
	if !a.quiet {
		a.printf("machine %s is no longer replicated once its agent picks this up; the replica is kept at the target\n", machine)
	}
	return nil
}
