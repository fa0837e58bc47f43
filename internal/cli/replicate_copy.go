package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/backup"
	"lifeboat/internal/job"
	"lifeboat/internal/vault"
)

// replicateCopyCommand is replicate copy: flags and printing only
// (job.RunReplicaCopy does the work).
func (a *app) replicateCopyCommand() *cobra.Command {
	var machine, site, point string
	var tags []string
	var every time.Duration
	cmd := &cobra.Command{
		Use:     "copy --machine NAME [--site SITE] [--point latest|latest-app|ID|TIME] --vault URL",
		Short:   "Copy a replica recovery point into a vault as a backup point",
		Long:    help("replicate-copy"),
		Example: help("replicate-copy.example"),
		Args:    cobra.NoArgs,
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			cl, err := a.siteClient(machine, site)
			if err != nil {
				return err
			}
			rc := job.ReplicaCopy{Machine: machine, Point: point, Site: cl.Site(), Tags: tags}
			if every > 0 {
				ctx, stop := foreground(ctx)
				defer stop()
				log := a.logger()
				job.RunReplicaCopies(ctx, a.env.Clock, every, func(ctx context.Context) (*job.ReplicaCopyResult, error) {
					return job.RunReplicaCopy(ctx, v, cl, rc, job.Env{Seen: a.book(), Warn: a.warn})
				}, func(res *job.ReplicaCopyResult, err error) {
					switch {
					case err != nil:
						log.Error("copying a replica point", "machine", machine, "err", err)
					case res.AlreadyCopied:
						log.Info("replica point already in the vault", "machine", machine, "cut", res.Cut.ID, "point", res.Point.ID.Short())
					default:
						log.Info("copied a replica point", "machine", machine, "cut", res.Cut.ID, "point", res.Point.ID.Short(),
							"time", res.Point.Time, "consistency", res.Point.Consistency)
					}
				})
				return nil
			}
			pb := newBar(a.env.Stderr, "copy "+machine, !a.quiet)
			res, err := job.RunReplicaCopy(ctx, v, cl, rc,
				job.Env{Seen: a.book(), Warn: a.warn,
					Progress: func(p backup.Progress) { pb.Update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final) }})
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(res.Report())
			}
			if res.AlreadyCopied {
				a.infof("point %d of %s is in the vault already as %s\n", res.Cut.ID, machine, res.Point.ID.Short())
				a.printf("%s\n", res.Point.ID)
				return nil
			}
			return a.reportPoint(machine, res.Point)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&machine, "machine", "", "replicated machine (required)")
	f.StringVar(&site, "site", "", "site holding the replica (default: the machine's target on this host)")
	f.StringVar(&point, "point", "latest", "replica point: latest, latest-app, a point ID or an RFC 3339 time")
	f.StringArrayVar(&tags, "tag", nil, "tag the point (repeatable)")
	f.DurationVar(&every, "every", 0, "copy again every interval, in the foreground, until stopped (logging each copy)")
	return cmd
}
