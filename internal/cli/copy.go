package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"lifeboat/internal/blob"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// envCopy is the environment prefix of the copy of `vault status`: it
// reads LIFEBOAT_COPY_S3_ENDPOINT ... before the plain names (the source of
// a copy reads LIFEBOAT_FROM_*: location.OpenSource).
const envCopy = "LIFEBOAT_COPY_"

// existing opens the store of the vault at url, reading the variables
// prefix+NAME first (location.PrefixedEnv), and checks that a vault is
// there.
func (a *app) existing(ctx context.Context, url, prefix string) (blob.Store, error) {
	return location.Existing(ctx, url, location.PrefixedEnv(prefix, a.env.Getenv))
}

// openSource opens the source vault of a copy at url: its own variables
// (LIFEBOAT_FROM_*), and its passphrase from passwordFile,
// LIFEBOAT_FROM_PASSWORD, or else the target's.
func (a *app) openSource(ctx context.Context, url, passwordFile string) (*vault.Vault, error) {
	return location.OpenSource(ctx, url, passwordFile, a.env.Getenv, a.warn, a.passphrase, a.options())
}

// copyOfFlags adds --copy-of to vault init.
type copyOfFlags struct {
	from, passwordFile string
}

func (f *copyOfFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.from, "copy-of", "", "make the new vault a copy of this vault: same keys and chunk size, own passphrase (see 'vault copy')")
	cmd.Flags().StringVar(&f.passwordFile, "from-password-file", "", "with --copy-of: the source vault's passphrase (env LIFEBOAT_FROM_PASSWORD; default: the new vault's)")
}

// initCopyOf creates the vault at store as a copy of the --copy-of vault
// (vault init maps its errors).
func (a *app) initCopyOf(cmd *cobra.Command, f *copyOfFlags, store blob.Store, pw []byte, opts vault.Options) (*vault.Vault, error) {
	if cmd.Flags().Changed("chunk-size") || cmd.Flags().Changed("compression") {
		return nil, usageError{errors.New("--chunk-size and --compression come from the source vault with --copy-of")}
	}
	src, err := a.openSource(cmd.Context(), f.from, f.passwordFile)
	if err != nil {
		return nil, err
	}
	return vault.InitCopyOf(cmd.Context(), store, pw, src, opts)
}

func (a *app) vaultCopyCommand() *cobra.Command {
	var from, to, machine, fromPasswordFile string
	cmd := &cobra.Command{
		Use:     "copy --from SOURCE --to COPY [--machine NAME]",
		Short:   "Copy the recovery points a vault copy lacks (geo-redundancy)",
		Long:    help("vault-copy"),
		Example: help("vault-copy.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if from == "" || to == "" {
				return usageError{errors.New("--from and --to are both required")}
			}
			if machine != "" {
				if err := recovery.ValidName("machine", machine); err != nil {
					return usageError{err}
				}
			}
			a.vaultURL = to
			dst, err := a.open(ctx)
			if errors.Is(err, vaultcopy.ErrKeysDiffer) || errors.Is(err, vaultcopy.ErrSameVault) {
				return err // it names both vaults
			}
			if err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			src, err := a.openSource(ctx, from, fromPasswordFile)
			if err != nil {
				return err
			}
			pb := newBar(a.env.Stderr, "copy", !a.quiet && !a.jsonOut)
			st, err := job.RunCopy(ctx, src, dst, job.Copy{Machine: machine, From: from, To: to}, job.Env{Seen: a.book(),
				Warn: func(s string) { a.warnf("%s", s) },
				CopyProgress: func(p vaultcopy.Progress) {
					pb.Update(p.DoneBytes, p.TotalBytes, p.Elapsed, p.Final)
				}})
			if err != nil {
				return fmt.Errorf("copy from %s to %s: %w", src.Store(), dst.Store(), err)
			}
			return a.emit(st, func() {
				for _, id := range st.Points {
					a.printf("%s\n", id)
				}
				a.infof("copied %d point(s) from %s to %s: %d chunks, %s read, %s written in %s\n",
					st.PointsCopied, src.Store(), dst.Store(), st.Chunks, size(st.ReadBytes), size(st.WrittenBytes),
					(time.Duration(st.DurationMS) * time.Millisecond).Round(time.Millisecond))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the source vault: a directory or s3://bucket/prefix (required)")
	f.StringVar(&to, "to", "", "the copy, created with 'vault init --copy-of' (required)")
	f.StringVar(&machine, "machine", "", "copy only this machine's points")
	f.StringVar(&fromPasswordFile, "from-password-file", "", "the source's passphrase (env LIFEBOAT_FROM_PASSWORD; default: the copy's)")
	return cmd
}

func (a *app) vaultStatusCommand() *cobra.Command {
	var copyURL, machine string
	cmd := &cobra.Command{
		Use:     "status [--copy COPY] [--machine NAME]",
		Short:   "Summarise a vault, and how far behind its copy is",
		Long:    help("vault-status"),
		Example: help("vault-status.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var copyStore blob.Store
			if copyURL != "" {
				s, err := a.existing(ctx, copyURL, envCopy)
				if err != nil {
					return fmt.Errorf("copy: %w", err)
				}
				copyStore = s
			}
			v, err := a.open(ctx)
			if err != nil {
				return err
			}
			out, err := job.VaultStatus(ctx, v, machine, copyStore, a.env.Clock.Now(), a.jobEnv())
			if err != nil {
				return err
			}
			return a.emit(out, func() { a.printStatus(out) })
		},
	}
	cmd.Flags().StringVar(&copyURL, "copy", "", "a copy of this vault (vault init --copy-of) to compare with")
	cmd.Flags().StringVar(&machine, "machine", "", "only this machine's points")
	return cmd
}

func (a *app) printStatus(out *job.Status) {
	a.printf("vault %s (%s): %d point(s) of %d machine(s), %s in %d pack(s)\n", out.Vault, out.ID, out.Points, len(out.Machines),
		size(out.SizeBytes), out.Packs)
	if len(out.Machines) > 0 {
		table(a, "MACHINE\tPOINTS\tLATEST\tLATEST ID", out.Machines, func(m job.MachineStatus) string {
			return fmt.Sprintf("%s\t%d\t%s\t%s", m.Machine, m.Points, when(m.LatestTime), m.LatestID[:12])
		})
	}
	if out.Copy == nil {
		return
	}
	c := out.Copy
	if c.UpToDate {
		a.printf("copy %s: up to date (lag 0)\n", c.Vault)
		return
	}
	lag := time.Duration(c.LagSeconds * float64(time.Second)).Round(time.Second)
	a.printf("copy %s: %d point(s) not copied, lag %s\n", c.Vault, c.PendingPoints, lag)
	table(a, "ID\tTIME\tMACHINE", c.Pending, func(p job.PendingPoint) string {
		return fmt.Sprintf("%s\t%s\t%s", p.ID[:12], when(p.Time), p.Machine)
	})
}
