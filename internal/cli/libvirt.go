package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lifeboat/internal/job"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/recovery"
)

// libvirtRestoreFlags are restore's flags for defining the restored
// machine as a libvirt domain.
type libvirtRestoreFlags struct {
	define, start bool
	name, connect string
}

func (l *libvirtRestoreFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&l.define, "libvirt-define", false, "with --to: define the restored machine as a new libvirt domain from the point's domain XML")
	f.StringVar(&l.name, "name", "", "with --libvirt-define: the new domain's name (default: the domain's name with --suffix)")
	f.BoolVar(&l.start, "start", false, "start the restored machine: with --libvirt-define the new domain; with --instant (required) the machine run from the vault")
	f.StringVar(&l.connect, "connect", "", "libvirt daemon URI for --libvirt-define and --in-place (default qemu:///system)")
}

func (l *libvirtRestoreFlags) apply(spec *job.Restore) {
	spec.LibvirtDefine, spec.Start, spec.Name, spec.Connect = l.define, l.start, l.name, l.connect
}

func (a *app) libvirtCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "libvirt",
		Short: "Work with the libvirt domains of this host",
		Args:  cobra.NoArgs,
	}
	var connect string
	list := &cobra.Command{
		Use:     "list [--connect URI]",
		Short:   "List the libvirt domains, their disks and whether lifeboat protects them",
		Long:    help("libvirt-list"),
		Example: help("libvirt-list.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var points []*recovery.Point
			if a.vaultURL != "" {
				v, err := a.open(ctx)
				if err != nil {
					return err
				}
				if points, err = recovery.List(ctx, v); err != nil {
					return err
				}
			}
			doms, err := libvirt.List(ctx, connect, points)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(doms)
			}
			a.table("DOMAIN\tSTATE\tDISKS\tPROTECTED BY\tLAST POINT", func(w *tabwriter.Writer) {
				for _, d := range doms {
					state := "stopped"
					if d.Running {
						state = "running"
					}
					var disks []string
					for _, disk := range d.Disks {
						disks = append(disks, fmt.Sprintf("%s(%s)", disk.Target, disk.Type))
					}
					prot, last := "-", "-"
					switch {
					case a.vaultURL == "":
						prot = "(no vault given)"
					case len(d.Machines) > 0:
						prot = strings.Join(d.Machines, ",")
						last = d.LastPoint.UTC().Format("2006-01-02 15:04:05")
					default:
						prot = "unprotected"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.Name, state, strings.Join(disks, " "), prot, last)
				}
			})
			for _, d := range doms {
				for _, p := range d.Problems {
					a.warnf("domain %s: %s", d.Name, p)
				}
			}
			return nil
		},
	}
	list.Flags().StringVar(&connect, "connect", "", "libvirt daemon URI (default qemu:///system)")
	cmd.AddCommand(list)
	return cmd
}
