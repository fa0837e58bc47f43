package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"lifeboat/internal/catalog"
)

func (a *app) alertCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "alert", Short: "Alerts the server raised (server)"}
	a.addRemoteFlags(cmd, &r)
	var all bool
	list := &cobra.Command{
		Use: "list [--all]", Short: "List open alerts (--all: with cleared ones)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return getTable(cmd.Context(), a, &r, fmt.Sprintf("/v1/alerts?all=%t", all), "ID\tOPENED\tKIND\tSUBJECT\tACKED BY\tCLEARED\tMESSAGE", func(al catalog.Alert) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", al.ID, when(al.Opened), al.Kind, al.Subject, orDash(al.AckedBy), when(al.Cleared), al.Message)
			})
		},
	}
	list.Flags().BoolVar(&all, "all", false, "include cleared alerts")
	ack := &cobra.Command{
		Use:     "ack ID",
		Short:   "Acknowledge an open alert: someone is on it",
		Long:    help("alert-ack"),
		Example: help("alert-ack.example"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var al catalog.Alert
			return a.call(cmd.Context(), &r, "POST", "/v1/alerts/"+url.PathEscape(args[0])+"/ack", nil, &al, func() {
				a.printf("alert %s (%s on %s) acknowledged by %s\n", al.ID, al.Kind, al.Subject, al.AckedBy)
			})
		},
	}
	cmd.AddCommand(list, ack)
	return cmd
}
