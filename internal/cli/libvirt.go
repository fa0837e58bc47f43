package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"lifeboat/internal/libvirt"
	"lifeboat/internal/recovery"
)

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
			return a.emit(doms, func() {
				table(a, "DOMAIN\tSTATE\tDISKS\tPROTECTED BY\tLAST POINT", doms, func(d libvirt.Listed) string {
					prot, last := d.Protection(a.vaultURL != "")
					return strings.Join([]string{d.Name, d.StateText(), d.DisksText(), prot, last}, "\t")
				})
				for _, d := range doms {
					for _, p := range d.Problems {
						a.warnf("domain %s: %s", d.Name, p)
					}
				}
			})
		},
	}
	list.Flags().StringVar(&connect, "connect", "", "libvirt daemon URI (default qemu:///system)")
	cmd.AddCommand(list)
	return cmd
}
