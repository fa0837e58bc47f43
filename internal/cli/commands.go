package cli

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/drill"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
)

func (a *app) vaultCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "vault", Short: "Create and inspect vaults"}
	var spec job.VaultInit
	var copyOf copyOfFlags
	initCmd := &cobra.Command{
		Use:     "init",
		Short:   "Create a new vault",
		Long:    help("vault-init"),
		Example: help("vault-init.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("lock-mode") {
				spec.LockMode = "" // the flag's default goes with --lock only
			}
			opts, err := spec.Options(a.options())
			if err != nil {
				return flagError(err)
			}
			pw, err := a.passphrase()
			if err != nil {
				return err
			}
			if err := vault.CheckNewPassphrase(pw); err != nil {
				return err
			}
			store, err := location.Store(ctx, a.vaultURL, true, a.env.Getenv)
			if err != nil {
				return err
			}
			var v *vault.Vault
			if copyOf.from != "" {
				v, err = a.initCopyOf(cmd, &copyOf, store, pw, opts)
			} else {
				v, err = vault.Init(ctx, store, pw, opts)
			}
			if err != nil {
				return err
			}
			cfg := v.Config()
			return a.emit(cfg, func() {
				a.printf("created vault %s at %s (chunk size %s, %s, soft delete %s)\n", cfg.ID, store, size(int64(cfg.ChunkSize)), cfg.Compression,
					windowText(opts.SoftDelete))
				a.printLock(cfg)
			})
		},
	}
	initCmd.Flags().StringVar(&spec.ChunkSize, "chunk-size", "", "chunk size, a power of two from 64K to 8M (default 256K)")
	initCmd.Flags().StringVar(&spec.Compression, "compression", "", "zstd-fastest (default), zstd or zstd-better")
	initCmd.Flags().StringVar(&spec.SoftDelete, "soft-delete", policy.FormatDuration(policy.DefaultSoftDelete), "how long forgotten points stay restorable (undelete) before prune purges them; 0 turns soft delete off")
	copyOf.add(initCmd)
	addLockFlags(initCmd, &spec)
	var newFile string
	passwd := &cobra.Command{
		Use:   "passwd --new-password-file FILE",
		Short: "Change the vault passphrase",
		Long:  help("vault-passwd"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			np, err := a.newPassphrase(newFile)
			if err != nil {
				return err
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			if err := v.ChangePassphrase(cmd.Context(), np); err != nil {
				return err
			}
			a.infof("passphrase changed\n")
			return nil
		},
	}
	passwd.Flags().StringVar(&newFile, "new-password-file", "", "read the new passphrase from this file")
	cmd.AddCommand(initCmd, passwd, a.vaultCopyCommand(), a.vaultStatusCommand(), a.vaultKeyCommand(), a.vaultRekeyCommand(), a.vaultSetCommand(), a.vaultSettingsCommand(), a.vaultServeCommand(), a.vaultAddCommand(), a.vaultListCommand())
	return cmd
}

// pointJSON is a point as points --json shows it.
var pointJSON = job.PointOf

func (a *app) pointsCommand() *cobra.Command {
	var machine string
	var rem remote
	var deleted bool
	cmd := &cobra.Command{
		Use:   "points [--machine NAME] [--deleted]",
		Short: "List recovery points",
		Long:  help("points"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a.serverUnlessVault(&rem)
			if rem.server != "" {
				if machine == "" {
					return usageError{errors.New("--machine is required with --server")}
				}
				if deleted {
					return usageError{errors.New("--deleted reads the vault: give --vault, not --server")}
				}
				return getTable(cmd.Context(), a, &rem, "/v1/machines/"+url.PathEscape(machine)+"/points", "ID\tTIME\tCONSISTENCY\tCHANGES\tSIZE\tVAULT\tNOTES",
					func(p catalog.Point) string {
						return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", p.ID[:min(12, len(p.ID))], when(p.Time), p.Consistency,
							orDash(p.ChangeSource), size(p.Size), p.Vault, p.Notes)
					})
			}
			if deleted {
				return a.pointsDeleted(cmd.Context(), machine)
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			out, points, err := job.ListPoints(cmd.Context(), v, machine, a.jobEnv())
			if err != nil {
				return err
			}
			a.checkSeen(v, points)
			return a.emit(out, func() {
				cut := false
				table(a, "ID\tTIME\tMACHINE\tCONSISTENCY\tDISKS\tSIZE\tNEW\tCHANGES\tPROVEN\tNOTES", out, func(p job.PointJSON) string {
					pt := recovery.Point{Disks: p.Disks, Notes: p.Notes}
					note, c := pt.NoteSummary(60)
					cut = cut || c
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", p.Short, when(p.Time), p.Machine, p.Consistency,
						strings.Join(p.DiskNames(), ","), size(p.Size), size(p.NewBytes()), pt.ChangeSummary(), drill.Summary(p.Drill, a.env.Clock.Now()), note)
				})
				if cut && !a.quiet {
					fmt.Fprintln(a.env.Stderr, "notes are shortened: points --json shows them in full")
				}
				if len(out) == 0 && !a.quiet {
					fmt.Fprintln(a.env.Stderr, "no recovery points")
				}
			})
		},
	}
	cmd.Flags().StringVar(&machine, "machine", "", "only this machine's points")
	cmd.Flags().BoolVar(&deleted, "deleted", false, "list the soft-deleted points (see undelete)")
	rem.addServerFlags(cmd.Flags(), "list the points a lifeboat server knows of --machine (env LIFEBOAT_SERVER, when no vault is given)", nil)
	return cmd
}

func (a *app) restoreCommand() *cobra.Command {
	var rem remote
	var agentName string
	var wait bool
	var spec job.Restore
	var inst instantFlags
	cmd := &cobra.Command{
		Use:     "restore --machine NAME POINT|latest (--to DIR [--libvirt-define [--name NAME] [--start]] | --disk NAME --to-file PATH | --in-place)",
		Short:   "Restore the disks of a recovery point",
		Long:    help("restore"),
		Example: help("restore.example"),
		Args: func(cmd *cobra.Command, args []string) error {
			if inst.instant && inst.status {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if inst.instant && inst.status {
				return a.instantStatus(absPath(spec.Dir))
			}
			machine := spec.Machine
			if machine == "" {
				return usageError{errors.New("--machine is required")}
			}
			if inst.instant {
				inst.start = spec.Start // one --start flag for both
				return a.runInstant(cmd, &inst, job.InstantRestore{Machine: machine, Point: args[0], Vault: a.vaultURL, Dir: absPath(spec.Dir), Suffix: spec.Suffix, NewMACs: spec.NewMACs})
			}
			spec.Point = args[0]
			a.serverUnlessVault(&rem)
			if rem.server != "" {
				// Through the server, on an agent's host: paths are as
				// that host sees them, so they are sent as given.
				return a.queueAndWait(ctx, &rem, "/v1/machines/"+url.PathEscape(machine)+"/restore", api.RestoreJSON{Restore: spec, Agent: agentName}, wait)
			}
			spec.Vault, spec.Dir, spec.File = a.vaultURL, absPath(spec.Dir), absPath(spec.File)
			if err := spec.Validate(); err != nil {
				return flagError(err)
			}
			v, err := a.open(ctx)
			if err != nil {
				return err
			}
			pb := newBar(a.env.Stderr, "restore "+machine, !a.quiet)
			res, err := job.RunRestore(ctx, v, spec, job.Env{Seen: a.book(), Warn: func(s string) { a.warnf("%s", s) },
				RestoreProgress: func(pr restore.Progress) { pb.Update(pr.DoneBytes, pr.TotalBytes, pr.Elapsed, pr.Final) }})
			if err != nil {
				return err
			}
			return a.emit(res.Report(), func() { a.printRestored(res) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Machine, "machine", "", "machine name (required)")
	f.StringVar(&spec.Dir, "to", "", "directory to restore every disk into")
	f.StringVar(&spec.Disk, "disk", "", "restore only this disk")
	f.StringVar(&spec.File, "to-file", "", "file to restore --disk into")
	f.BoolVar(&spec.InPlace, "in-place", false, "revert existing disks, writing only blocks that differ")
	f.StringVar(&spec.Suffix, "suffix", "-dr", "suffix for the restored machine's name (not added to a name that has it)")
	f.BoolVar(&spec.NewMACs, "new-macs", false, "give the restored machine's NICs new random MAC addresses (52:54:00:xx:xx:xx)")
	f.StringVar(&spec.Format, "format", "", "format of new images: raw or qcow2 (default: the disk's format in the point's definition; for --to-file, the file's extension)")
	f.BoolVar(&spec.LibvirtDefine, "libvirt-define", false, "with --to: define the restored machine as a new libvirt domain from the point's domain XML")
	f.StringVar(&spec.Name, "name", "", "with --libvirt-define: the new domain's name (default: the domain's name with --suffix)")
	f.BoolVar(&spec.Start, "start", false, "start the restored machine: with --libvirt-define the new domain; with --instant (required) the machine run from the vault")
	f.StringVar(&spec.Connect, "connect", "", "libvirt daemon URI for --libvirt-define and --in-place (default qemu:///system)")
	rem.addServerFlags(f, "restore through this lifeboat server, on an agent's host (see --agent; env LIFEBOAT_SERVER, when no vault is given)", &wait)
	f.StringVar(&agentName, "agent", "", "with --server: the host that writes the disks (default: the machine's agent); paths are that host's")
	inst.add(f)
	return cmd
}

// printRestored prints what restore did: a summary on stderr, then each
// disk's image, the -dr definition and its new MACs, and the domain.
func (a *app) printRestored(res *job.Restored) {
	p, targets, st := res.Point, res.Targets, res.Stats
	if !a.quiet {
		d := time.Duration(st.DurationMS) * time.Millisecond
		fmt.Fprintf(a.env.Stderr, "restored point %s of %s: %d disk(s), %s, %s written in %s (%s/s)\n", p.ID.Short(), p.Machine,
			len(targets), size(st.Bytes), size(st.WrittenBytes), d.Round(time.Millisecond), size(int64(float64(st.Bytes)/max(d.Seconds(), 0.001))))
	}
	for _, t := range targets {
		a.printf("%s\t%s\n", t.Disk.Name, t.Path)
	}
	if res.DefinitionPath != "" {
		a.printf("definition\t%s\n", res.DefinitionPath)
		for _, m := range res.Definition.MACs {
			a.printf("nic%d\t%s (was %s)\n", m.NIC, m.New, cmp.Or(m.Old, "unset"))
		}
	}
	if res.Domain != nil {
		a.printf("domain\t%s\n", res.Domain.Name)
	}
}
