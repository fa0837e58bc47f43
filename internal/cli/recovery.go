package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"lifeboat/internal/job"
)

// Recovery commands: export (and, below, start, drill, mount). Flags and
// printing only; the work is in internal/job, pointdisk and boot.

func (a *app) exportCommand() *cobra.Command {
	var spec job.Export
	cmd := &cobra.Command{
		Use:   "export --machine NAME POINT|latest --nbd unix:PATH|HOST:PORT [--disk NAME] [--writable]",
		Short: "Serve a recovery point's disks over NBD, read from the vault on demand",
		Long: `Serve the disks of a recovery point over NBD without restoring them first.

Each disk of the point is an NBD export named after the disk (only --disk NAME with
--disk). Blocks are read from the vault when a client asks for them: authenticated,
decrypted and decompressed, kept in a bounded cache (--cache, per disk), with
read-ahead when reads are sequential. Blocks that were all zeros are holes: clients
that ask for block status (qemu-img map, nbdcopy) see them without reading them.

  --nbd unix:PATH    listen on a new unix socket (mode 0600, removed at exit)
  --nbd HOST:PORT    listen on TCP (no TLS, no authentication: bind to a trusted
                     address only, such as 127.0.0.1)

The export is read-only: clients' writes fail with EPERM. --writable puts a
copy-on-write overlay in front of each disk, in a file of --overlay-dir (default the
system's temporary directory) that is deleted at once and lives as long as the
command: writes never reach the vault and are gone when the export stops.

The URI of each export is printed (nbd+unix:///DISK?socket=PATH or
nbd://HOST:PORT/DISK; --json prints them as JSON), then lifeboat serves in the
foreground until SIGINT or SIGTERM. While it runs it holds a read session in the
vault, as a restore does, so that a prune keeps what it reads. A block that cannot
be read (a damaged or missing pack) fails that read with EIO, and a warning on
stderr names the object; other blocks are still served.

Works with any vault, directory or S3, and with a vault copy (give the copy as
--vault): a second site can boot a point without its first site.`,
		Example: `  lifeboat export --vault /srv/vault --machine web1 latest --nbd unix:/run/web1.sock
  qemu-img convert -O qcow2 'nbd+unix:///root?socket=/run/web1.sock' /tmp/root.qcow2
  lifeboat export --machine web1 3fa9c2 --disk root --nbd 127.0.0.1:10809 --writable
  qemu-system-x86_64 -m 2048 -drive file=nbd://127.0.0.1:10809/root,format=raw`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			spec.Point, spec.Vault = args[0], a.vaultURL
			if spec.Machine == "" {
				return usageError{errors.New("--machine is required")}
			}
			if err := spec.Validate(); err != nil {
				return exportFlagError(err)
			}
			v, err := a.open(ctx)
			if err != nil {
				return err
			}
			return job.RunExport(ctx, v, spec, job.Env{Warn: func(s string) { a.warnf("%s", s) }}, func(x *job.Exporting) {
				if a.jsonOut {
					a.printJSON(x)
					return
				}
				if !a.quiet {
					fmt.Fprintf(a.env.Stderr, "serving point %s of %s (%d disk(s), ready in %d ms); stop with Ctrl-C\n",
						x.PointID[:12], x.Machine, len(x.Disks), x.ReadyMS)
				}
				for _, d := range x.Disks {
					a.printf("%s\t%s\n", d.Name, d.URI)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Machine, "machine", "", "machine name (required)")
	f.StringVar(&spec.Listen, "nbd", "", "where to listen: unix:PATH or HOST:PORT (required)")
	f.StringVar(&spec.Disk, "disk", "", "export only this disk")
	f.BoolVar(&spec.Writable, "writable", false, "accept writes into a throwaway copy-on-write overlay (never the vault)")
	f.StringVar(&spec.OverlayDir, "overlay-dir", "", "with --writable: directory of the overlay files (default: the temporary directory)")
	f.IntVar(&spec.CacheMiB, "cache", 0, "MiB of decoded chunks cached per disk (default 64)")
	return cmd
}

// exportFlagError names the flag behind an invalid export spec.
func exportFlagError(err error) error {
	var ie *job.InvalidError
	if !errors.As(err, &ie) {
		return err
	}
	if ie.Field == "vault" {
		return usageError{errors.New("no vault given: use --vault or set LIFEBOAT_VAULT")}
	}
	flag := map[string]string{"machine": "--machine", "point": "POINT", "disk": "--disk", "listen": "--nbd",
		"overlay_dir": "--overlay-dir", "cache_mib": "--cache"}[ie.Field]
	if flag == "" {
		return usageError{errors.New(ie.Reason)}
	}
	return usageError{fmt.Errorf("%s: %s", flag, ie.Reason)}
}
