package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"lifeboat/internal/api"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"lifeboat/internal/job"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/vault"
)

func (a *app) verifyCommand() *cobra.Command {
	var readData, wait bool
	var rem remote
	cmd := &cobra.Command{
		Use:   "verify [--read-data]",
		Short: "Check the vault and name every missing or corrupt object",
		Long:  help("verify"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rem.server != "" {
				name := cmp.Or(a.vaultURL, "default")
				return a.queueAndWait(cmd.Context(), &rem, "/v1/vaults/"+url.PathEscape(name)+"/verify", api.VerifyJSON{ReadData: readData}, wait)
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			var env job.Env
			if readData {
				pb := newBar(a.env.Stderr, "verify --read-data", !a.quiet && !a.jsonOut)
				start := a.env.Clock.Now()
				env.VerifyProgress = func(done, total int64) {
					pb.Update(done, total, a.env.Clock.Now().Sub(start), done == total)
				}
			}
			rep, err := job.RunVerify(cmd.Context(), v, job.Verify{Vault: a.vaultURL, ReadData: readData}, env)
			if rep == nil {
				return err
			}
			if perr := a.emit(rep, func() {
				for _, w := range rep.Warnings {
					a.warnf("%s", w)
				}
				for _, p := range rep.Problems {
					a.printf("error: %s: %s\n", p.Object, p.Error)
				}
				a.printf("%d points, %d manifests, %d index objects, %d packs, %d chunks", rep.Points, rep.Manifests, rep.IndexObjects, rep.Packs, rep.Chunks)
				if readData {
					a.printf(", %s read", size(rep.ReadDataBytes))
				}
				a.printf(": %d problem(s)\n", len(rep.Problems))
			}); perr != nil {
				return perr
			}
			return err // problems found
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "read and check every stored byte")
	rem.addServerFlags(cmd.Flags(), "verify through this lifeboat server (--vault is then the server's name for the vault)", &wait)
	return cmd
}

func (a *app) forgetCommand() *cobra.Command {
	var machine, within string
	var r policy.Retention
	var prune, dryRun bool
	cmd := &cobra.Command{
		Use:     "forget [--machine NAME] --keep-* ...",
		Short:   "Remove recovery points by retention policy",
		Long:    help("forget"),
		Example: help("forget.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if within != "" {
				d, err := policy.ParseDuration(within)
				if err != nil {
					return usageError{fmt.Errorf("--keep-within: %w", err)}
				}
				r.KeepWithin = d
			}
			spec := job.Forget{Machine: machine, Vault: a.vaultURL, Keep: r, Prune: prune, DryRun: dryRun}
			if err := spec.Validate(); err != nil {
				var ie *job.InvalidError
				if errors.As(err, &ie) && ie.Field == "keep" {
					return usageError{errors.New(strings.Replace(ie.Reason, "no keep rule", "no --keep-* rule", 1))}
				}
				return flagError(err)
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			f, err := job.RunForget(cmd.Context(), v, spec, job.Env{Seen: a.book(), Warn: a.warn})
			if err != nil {
				return err
			}
			res, pr := f.ForgetResult, f.Prune
			return a.emit(f.Report(dryRun), func() {
				table(a, "ID\tTIME\tMACHINE\tDECISION\tREASONS", res.Decisions, func(d policy.Decision) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", d.Point.ID[:12], when(d.Point.Time),
						d.Point.Machine, map[bool]string{true: "keep", false: "remove"}[d.Keep], strings.Join(d.Reasons, ","))
				})
				if dryRun {
					a.printf("would remove %d point(s)\n", f.Removing())
				} else {
					a.printf("removed %d point(s)\n", len(res.Removed))
					a.printLocked(res)
				}
				if res.SoftDelete > 0 && len(res.Removed) > 0 {
					a.printf("soft-deleted: 'lifeboat points --deleted' lists them and 'lifeboat undelete' brings one back for %s; prune purges them after that\n",
						policy.FormatDuration(res.SoftDelete))
				}
				if pr != nil {
					a.printPrune(pr)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&machine, "machine", "", "only this machine's points (default: every machine, each separately)")
	f.IntVar(&r.KeepLast, "keep-last", 0, "keep the N newest points")
	f.IntVar(&r.KeepHourly, "keep-hourly", 0, "keep the newest point of each of the last N hours that have one")
	f.IntVar(&r.KeepDaily, "keep-daily", 0, "keep the newest point of each of the last N days that have one")
	f.IntVar(&r.KeepWeekly, "keep-weekly", 0, "keep the newest point of each of the last N ISO weeks that have one")
	f.IntVar(&r.KeepMonthly, "keep-monthly", 0, "keep the newest point of each of the last N months that have one")
	f.IntVar(&r.KeepYearly, "keep-yearly", 0, "keep the newest point of each of the last N years that have one")
	f.StringVar(&within, "keep-within", "", `keep every point newer than this: 36h, 7d, 2w, 1y6m ("2m" alone is two minutes, as in Go; two months is "2m0d" or "60d")`)
	f.BoolVar(&prune, "prune", false, "run prune afterwards")
	f.BoolVar(&dryRun, "dry-run", false, "show what would be removed, remove nothing")
	return cmd
}

func (a *app) printPrune(r *maintenance.PruneReport) {
	a.printf("prune: %d points use %d chunks; packs: %d kept, %d repacked (%s), %d deleted (%s); %d index objects and %d manifests replaced or removed\n",
		r.Points, r.ReferencedChunks, r.KeptPacks, r.RepackedPacks, size(r.RepackedBytes), r.DeletedPacks, size(r.DeletedBytes),
		r.DeletedIndexes, r.DeletedManifests)
	if r.Deferred {
		a.printf("prune: a backup or restore that started before this prune is still running: deletion is deferred to the next prune\n")
	}
	if r.PurgedPoints+r.SoftDeletedPoints > 0 {
		a.printf("prune: %d soft-deleted point(s) purged, %d kept until their window has passed\n", r.PurgedPoints, r.SoftDeletedPoints)
	}
	if r.LockedObjects > 0 {
		a.printf("prune: %d object(s) no point needs are under their object lock and stay until %s at least; a later prune removes them\n",
			r.LockedObjects, r.LockedUntil.Local().Format("2006-01-02 15:04:05"))
	}
	if r.Note != "" {
		a.printf("prune: %s\n", r.Note)
	}
}

func (a *app) pruneCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Delete data no recovery point uses",
		Long:  help("prune"),
		Args:  cobra.NoArgs,
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			opts := maintenance.PruneOptions{DryRun: dryRun}
			if !a.quiet && !a.jsonOut {
				opts.Log = func(s string) { fmt.Fprintf(a.env.Stderr, "prune: %s\n", s) }
			}
			rep, err := maintenance.Prune(ctx, v, opts)
			if err != nil {
				return err
			}
			if opts.Log == nil {
				for _, w := range rep.Warnings {
					a.warnf("%s", w)
				}
			}
			return a.emit(rep, func() { a.printPrune(rep) })
		}),
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be deleted, delete nothing")
	return cmd
}
