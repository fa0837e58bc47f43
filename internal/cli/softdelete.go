package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"lifeboat/internal/job"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/vault"
)

var windowText = policy.WindowText

func (a *app) vaultSetCommand() *cobra.Command {
	var window string
	var force bool
	cmd := &cobra.Command{
		Use:     "set --soft-delete DURATION [--force]",
		Short:   "Change the vault's soft-delete window",
		Long:    help("vault-set"),
		Example: help("vault-set.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("soft-delete") {
				return usageError{errors.New("nothing to set: give --soft-delete DURATION")}
			}
			d, err := job.SoftDeleteWindow(window)
			if err != nil {
				return flagError(err)
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			st, err := maintenance.SetSoftDelete(cmd.Context(), v, d, force)
			if err != nil {
				return err
			}
			return a.printSoftDelete(st)
		},
	}
	cmd.Flags().StringVar(&window, "soft-delete", "", "the new window: 14d, 36h, 2w; 0 turns soft delete off")
	cmd.Flags().BoolVar(&force, "force", false, "allow a shorter window than the one in force (it applies once that one has passed)")
	return cmd
}

func (a *app) vaultSettingsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "settings",
		Short: "Show the vault's soft-delete window",
		Long:  help("vault-settings"),
		Args:  cobra.NoArgs,
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			st, err := maintenance.SoftDeleteState(ctx, v)
			if err != nil {
				return err
			}
			return a.printSoftDelete(st)
		}),
	}
}

func (a *app) printSoftDelete(st *maintenance.SoftDelete) error {
	return a.emit(job.SoftDeleteOf(st), func() {
		a.printf("soft delete: %s\n", windowText(st.Window))
		for _, n := range st.Unreadable {
			a.printf("  %s cannot be read: forget and prune refuse until it is moved out of settings/\n", n)
		}
		if st.Lost {
			a.printf("  the vault has soft-deleted points but no setting (settings/ was deleted): forget and prune refuse until 'vault set --soft-delete' sets the window\n")
		}
		if len(st.Settings) == 0 {
			a.printf("  (never set: forget deletes points at once; 'lifeboat vault set --soft-delete 14d' turns it on)\n")
		} else if st.Set != st.Window {
			a.printf("  %s set, in force from %s\n", windowText(st.Set), when(st.Effective))
		}
		for _, s := range st.Settings {
			a.printf("  %s  set to %s on %s\n", when(s.At()), windowText(s.Window()), orDash(s.Host))
		}
	})
}

// pointsDeleted is points --deleted: the soft-deleted points.
func (a *app) pointsDeleted(ctx context.Context, machine string) error {
	v, err := a.open(ctx)
	if err != nil {
		return err
	}
	deleted, err := maintenance.Deleted(ctx, v, machine)
	if err != nil {
		return err
	}
	return a.emit(job.DeletedOf(deleted), func() {
		table(a, "ID\tTIME\tMACHINE\tCONSISTENCY\tSIZE\tDELETED\tPURGED AFTER\tBY", deleted, func(d maintenance.DeletedPoint) string {
			p := d.Point
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", p.ID.Short(), when(p.Time), p.Machine, p.Consistency,
				size(p.Size()), when(d.Deleted), when(d.PurgeAt), orDash(d.Host))
		})
		if len(deleted) == 0 && !a.quiet {
			a.warnf("no soft-deleted points")
		}
	})
}

func (a *app) undeleteCommand() *cobra.Command {
	var machine string
	cmd := &cobra.Command{
		Use:     "undelete --machine NAME POINT",
		Short:   "Bring back a forgotten (soft-deleted) recovery point",
		Long:    help("undelete"),
		Example: help("undelete.example"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if machine == "" {
				return usageError{errors.New("--machine is required")}
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			p, err := maintenance.Undelete(cmd.Context(), v, machine, args[0])
			if err != nil {
				return err
			}
			return a.emit(pointJSON(p), func() { a.printf("undeleted point %s of %s (%s)\n", p.ID.Short(), p.Machine, when(p.Time)) })
		},
	}
	cmd.Flags().StringVar(&machine, "machine", "", "the point's machine (required)")
	return cmd
}
