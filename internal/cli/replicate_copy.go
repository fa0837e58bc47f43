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
		Use:   "copy --machine NAME [--site SITE] [--point latest|latest-app|ID|TIME] --vault URL",
		Short: "Copy a replica recovery point into a vault as a backup point",
		Long: `Copy one of a replicated machine's recovery points from its target site into a
vault, as an ordinary recovery point of the machine there: its disks, its
definition, the cut's instant as the point's time, and its consistency (a
crash-consistent cut is crash, an app-consistent one file: the guest's
filesystems were frozen by its agent), and the tag "replica" (in points
--json). Replication and backup then share one history: restore,
vault copy, retention and verify treat the point as any other.

Run it on the target site's host (the site names it with lifeboat site add):
the site holds the point's disks there while they are read, and its history is
not folded meanwhile. When the machine's latest point in the vault was copied
from the same replica, only the blocks its journal saw written since are read,
and the disks record change source "replica"; otherwise every block is read
and compared with the latest point, so only changed chunks are stored either
way. Copying the cut the latest point already holds writes nothing.

With --every the command runs in the foreground (a systemd service at the
site) and copies the point again every interval until stopped: with the
default --point latest the vault follows the replica at that pace. A failed
copy is logged and tried again at the next interval.`,
		Example: `  lifeboat site add dr1 --url http://127.0.0.1:8443 --token-file /etc/lifeboat/site.token
  lifeboat replicate copy --site dr1 --machine db1 --vault /srv/vault
  lifeboat replicate copy --site dr1 --machine db1 --point latest-app --vault s3://bucket/vault --json
  lifeboat replicate copy --site dr1 --machine db1 --vault /srv/vault --every 1h`,
		Args: cobra.NoArgs,
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
					Progress: func(p backup.Progress) { pb.update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final) }})
			if err != nil {
				return notFound(err)
			}
			if a.jsonOut {
				return a.printJSON(struct {
					Point         any    `json:"point"`
					Cut           any    `json:"cut"`
					AlreadyCopied bool   `json:"already_copied"`
					ID            string `json:"id"`
				}{pointJSON(res.Point), res.Cut, res.AlreadyCopied, res.Point.ID.String()})
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
