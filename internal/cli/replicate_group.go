package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/replica"
	"lifeboat/internal/replicate"
)

func (a *app) failbackCommand() *cobra.Command {
	var machine, accel string
	cmd := &cobra.Command{
		Use:     "failback --machine NAME [--accel tcg|kvm]",
		Short:   "Fail a re-protected machine back to its old site, losing nothing",
		Long:    help("failback"),
		Example: help("failback.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if machine == "" {
				return usageError{errors.New("--machine is required")}
			}
			cfg, err := a.replicationConfig()
			if err != nil {
				return err
			}
			fo, err := cfg.Failback(cmd.Context(), machine, replica.FailoverOptions{Point: "latest", Accel: accel}, a.env.Clock,
				slog.New(slog.NewTextHandler(a.env.Stderr, nil)))
			if err != nil {
				return err
			}
			return a.emit(fo, func() {
				a.printf("%s runs at its old site again (pid %d) from cut %d (%s), nothing lost; console %s, QMP %s\n",
					fo.Name, fo.PID, fo.Point.ID, fo.Point.Time.Format(time.RFC3339), fo.Console, fo.QMP)
			})
		},
	}
	cmd.Flags().StringVar(&machine, "machine", "", "the original machine's name (or its copy's, NAME-dr)")
	cmd.Flags().StringVar(&accel, "accel", "tcg", "tcg or kvm, at the old site")
	return cmd
}

func (a *app) groupFailover(cmd *cobra.Command, req replicate.GroupFailoverRequest) error {
	if err := req.Validate(); err != nil {
		return err
	}
	cfg, err := a.replicationConfig()
	if err != nil {
		return err
	}
	gf, err := cfg.GroupFailover(cmd.Context(), req, a.env.Clock, a.logger())
	if err != nil {
		return err
	}
	return a.emit(gf, func() {
		for _, fo := range gf.Failovers {
			switch {
			case req.Cleanup:
				a.printf("removed test failover %s of %s\n", fo.Name, fo.Machine)
			case req.Options.DisksOnly:
				a.printf("wrote the disks of %s at cut %d to %s in %.1fs\n", fo.Name, fo.Point.ID, filepath.Join(req.Options.To, fo.Machine), fo.Seconds)
			default:
				a.printf("%s runs at the target (pid %d) from cut %d; console %s, QMP %s\n", fo.Name, fo.PID, fo.Point.ID, fo.Console, fo.QMP)
			}
		}
		if !req.Cleanup {
			a.printf("group %s failed over to group point %d (%s)\n", req.Group, gf.Point.ID, gf.Point.Time.Format(time.RFC3339Nano))
		}
	})
}

// replicationTemplate is the runner of this host's replications.
func (a *app) replicationTemplate(log *slog.Logger) (replicate.Runner, error) {
	cfg, err := a.replicationConfig()
	if err != nil {
		return replicate.Runner{}, err
	}
	exe, err := a.executable()
	if err != nil {
		return replicate.Runner{}, err
	}
	return replicate.Runner{Config: cfg, Clock: a.env.Clock, Log: log, Executable: exe}, nil
}

func (a *app) groupPoints(cmd *cobra.Command, group, site string) error {
	cfg, err := a.replicationConfig()
	if err != nil {
		return err
	}
	cl, err := cfg.GroupClient(group, site)
	if err != nil {
		return err
	}
	st, err := cl.GroupStatus(cmd.Context(), group)
	if err != nil {
		return err
	}
	return a.emit(st, func() {
		a.printPoints(st.Points)
		a.printf("members: %s\n", strings.Join(st.Members, ", "))
	})
}

// printPoints prints recovery points as a table, oldest first.
func (a *app) printPoints(points []replica.Point) {
	table(a, "ID\tTIME\tCONSISTENCY\t", points, func(p replica.Point) string {
		return fmt.Sprintf("%d\t%s\t%s\t%s", p.ID, p.Time.Format(time.RFC3339Nano), p.Consistency, map[bool]string{true: "latest"}[p.Latest])
	})
}
