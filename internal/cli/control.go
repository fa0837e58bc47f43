package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
)

// The commands that talk to a lifeboat server: flags in, a request out,
// the answer printed. Everything they mean is decided by the server.

type remote struct {
	server, tokenFile string
}

func (a *app) addRemoteFlags(cmd *cobra.Command, r *remote) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&r.server, "server", "", "lifeboat server URL (env LIFEBOAT_SERVER; default http://127.0.0.1:8080)")
	pf.StringVar(&r.tokenFile, "token-file", "", "file holding an API token (env LIFEBOAT_TOKEN gives it directly)")
}

// serverUnlessVault makes a command that reads either a vault or a server
// (points, restore) use LIFEBOAT_SERVER when neither --server nor a vault
// (--vault, LIFEBOAT_VAULT) is given.
func (a *app) serverUnlessVault(r *remote) {
	if r.server == "" && a.vaultURL == "" {
		r.server = a.env.Getenv("LIFEBOAT_SERVER")
	}
}

// addServerFlags adds --server, saying usage, and --token-file to a vault
// command that can go through a server instead; with wait, also --wait.
func (r *remote) addServerFlags(f *pflag.FlagSet, usage string, wait *bool) {
	f.StringVar(&r.server, "server", "", usage)
	f.StringVar(&r.tokenFile, "token-file", "", "with --server: file holding an API token (env LIFEBOAT_TOKEN)")
	if wait != nil {
		f.BoolVar(wait, "wait", false, "with --server: follow the job until it ends")
	}
}

func (a *app) client(r *remote) (*api.Client, error) {
	return api.Connect(r.server, r.tokenFile, a.env.Getenv)
}

// call sends one request and prints the answer: as JSON with --json,
// otherwise through show.
func (a *app) call(ctx context.Context, r *remote, method, path string, body any, out any, show func()) error {
	c, err := a.client(r)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.Do(ctx, method, path, body, &raw); err != nil {
		return err
	}
	if a.jsonOut {
		if len(raw) == 0 {
			return nil
		}
		return a.printJSON(raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return err
		}
	}
	if show != nil {
		show()
	}
	return nil
}

// listCommand is a list command: GET path and print its items, a row
// each, under header, or the answer as JSON with --json.
func listCommand[T any](a *app, r *remote, use, short, path, header string, row func(T) string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return getTable(cmd.Context(), a, r, path, header, row) }}
}

// getTable GETs path and prints its items as listCommand does.
func getTable[T any](ctx context.Context, a *app, r *remote, path, header string, row func(T) string) error {
	var items []T
	return a.call(ctx, r, "GET", path, nil, &items, func() { table(a, header, items, row) })
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// copyLag is a machine's copy lag to the second, "missed" beyond its
// tier's RPO; "-" when its policy copies nowhere.
func copyLag(c *api.CopyJSON) string {
	if c == nil {
		return "-"
	}
	s := api.Duration(time.Duration(c.Lag).Round(time.Second)).Text()
	if c.Missed {
		s += " missed"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func (a *app) tierCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "tier", Short: "Protection tiers: RPO and RTO objectives (server)"}
	a.addRemoteFlags(cmd, &r)
	var body api.TierRequest
	add := &cobra.Command{
		Use:   "add NAME (--rpo DURATION [--rto DURATION] [--drill-every DURATION] | --none)",
		Short: "Create or replace a tier",
		Long:  help("tier-add"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t api.TierJSON
			return a.call(cmd.Context(), &r, "PUT", "/v1/tiers/"+url.PathEscape(args[0]), body, &t, func() {
				a.printf("tier %s saved\n", t.Name)
			})
		},
	}
	add.Flags().StringVar(&body.RPO, "rpo", "", "recovery point objective, e.g. 15m, 4h, 1d")
	add.Flags().StringVar(&body.RTO, "rto", "", "recovery time objective, e.g. 15m")
	add.Flags().StringVar(&body.DrillEvery, "drill-every", "", "drill each machine's latest point this often, e.g. 1d, 1w (default: the server's --drill-every)")
	add.Flags().BoolVar(&body.None, "none", false, "a tier that asks for no protection")
	list := listCommand(a, &r, "list", "List tiers", "/v1/tiers", "NAME\tRPO\tRTO\tDRILLS", func(t api.TierJSON) string {
		if t.None {
			return t.Name + "\tno protection\t-\t-"
		}
		return fmt.Sprintf("%s\t%s\t%s\t%s", t.Name, t.RPO.Text(), t.RTO.Text(), t.DrillText())
	})
	cmd.AddCommand(add, list)
	return cmd
}

func (a *app) policyCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "policy", Short: "Backup policies: schedule, consistency, retention, vault (server)"}
	a.addRemoteFlags(cmd, &r)
	var p api.PolicyRequest
	add := &cobra.Command{
		Use:   "add NAME (--every DURATION | --cron EXPR) --vault NAME|URL [--keep-… N]",
		Short: "Create or replace a backup policy",
		Long:  help("policy-add"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(&r)
			if err != nil {
				return err
			}
			if err := p.ResolveVaults(cmd.Context(), c); err != nil {
				return err
			}
			var out api.PolicyJSON
			return a.call(cmd.Context(), &r, "PUT", "/v1/policies/"+url.PathEscape(args[0]), p, &out, func() {
				a.printf("policy %s saved\n", out.Name)
			})
		},
	}
	f := add.Flags()
	f.StringVar(&p.Every, "every", "", "run every DURATION (15m, 1h, 1d)")
	f.StringVar(&p.Cron, "cron", "", `run at the times of a cron expression ("30 2 * * *", @daily)`)
	f.StringVar(&p.Stagger, "stagger", "", "spread the machines' starts over this window after each run time")
	f.StringVar(&p.Consistency, "consistency", "crash", "crash, file or app")
	f.StringVar(&p.Vault, "vault", "", "target vault: a name the server knows, or a directory or s3:// URL (default: the server's vault \"default\")")
	f.StringVar(&p.CopyTo, "copy-to", "", "copy each new point to this vault after the backup")
	f.IntVar(&p.Keep.Last, "keep-last", 0, "keep the N newest points")
	f.IntVar(&p.Keep.Hourly, "keep-hourly", 0, "keep the newest point of each of the last N hours")
	f.IntVar(&p.Keep.Daily, "keep-daily", 0, "keep the newest point of each of the last N days")
	f.IntVar(&p.Keep.Weekly, "keep-weekly", 0, "keep the newest point of each of the last N weeks")
	f.IntVar(&p.Keep.Monthly, "keep-monthly", 0, "keep the newest point of each of the last N months")
	f.IntVar(&p.Keep.Yearly, "keep-yearly", 0, "keep the newest point of each of the last N years")
	f.StringVar(&p.Keep.Within, "keep-within", "", "keep every point newer than this (7d, 2w)")
	list := listCommand(a, &r, "list", "List backup policies", "/v1/policies", "NAME\tSCHEDULE\tCONSISTENCY\tVAULT\tCOPY TO", func(p api.PolicyJSON) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", p.Name, p.ScheduleText(), p.Consistency, p.Vault, orDash(p.CopyTo))
	})
	cmd.AddCommand(add, list)
	return cmd
}

func (a *app) machineCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "machine", Short: "Machines the server protects (server)"}
	a.addRemoteFlags(cmd, &r)
	var disks []string
	var src job.Source
	var agent, definition string
	add := &cobra.Command{
		Use:   "add NAME (--disk NAME=PATH … | --qmp SOCKET [--guest-agent SOCKET] | --libvirt DOMAIN [--connect URI]) [--agent NAME]",
		Short: "Register a machine and where its disks are read",
		Long:  help("machine-add"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := src.AddDisks(disks); err != nil {
				var ie *job.InvalidError
				errors.As(err, &ie)
				return usageError{fmt.Errorf("--disk %s", ie.Reason)}
			}
			if definition != "" {
				raw, err := os.ReadFile(definition)
				if err != nil {
					return usageError{fmt.Errorf("reading --definition: %w", err)}
				}
				src.Definition = raw
			}
			if err := src.Validate(); err != nil {
				return usageError{err}
			}
			return a.call(cmd.Context(), &r, "POST", "/v1/machines", api.AddMachineJSON{Name: args[0], Agent: agent, Source: src}, nil, func() {
				a.printf("machine %s added; protect it with: lifeboat protect %s --policy POLICY --tier TIER\n", args[0], args[0])
			})
		},
	}
	f := add.Flags()
	f.StringArrayVar(&disks, "disk", nil, "NAME=PATH of a disk (repeatable); with --qmp, NAME alone selects a disk")
	f.StringVar(&src.QMP, "qmp", "", "QMP socket of the running QEMU")
	f.StringVar(&src.GuestAgent, "guest-agent", "", "guest agent socket, to freeze filesystems")
	f.StringVar(&src.Libvirt, "libvirt", "", "libvirt domain, backed up through libvirt's backup API")
	f.StringVar(&src.Connect, "connect", "", "libvirt daemon URI with --libvirt (default qemu:///system)")
	f.StringVar(&agent, "agent", "", "agent whose host reads the disks (default: the server's built-in agent)")
	f.StringVar(&definition, "definition", "", "machine definition (JSON, lifeboat.machine/v1)")
	list := listCommand(a, &r, "list", "List machines with their protection and RPO state", "/v1/machines",
		"NAME\tAGENT\tTIER\tPOLICY\tRPO\tLAST POINT\tNEXT RUN\tCOPY LAG", func(m api.MachineJSON) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", m.Name, orDash(m.Agent), orDash(m.Tier), orDash(m.Policy),
				orDash(m.RPOState), when(m.LastPoint), when(m.NextRun), copyLag(m.Copy))
		})
	list.Long = `List the server's machines: agent, tier, policy, RPO state (green, warning, missed,
unprotected), newest recovery point, next scheduled backup, and COPY LAG — how long the copy to
the policy's second vault (--copy-to) has lacked a point, "missed" beyond the tier's RPO (the
copy-lag alert), "-" when the policy copies nowhere (docs/server.md, "Copy lag").
With --json, each machine as GET /v1/machines gives it, its copy under "copy".`
	remove := &cobra.Command{
		Use: "remove NAME", Short: "Remove a machine from the server (its points stay in the vault)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), &r, "DELETE", "/v1/machines/"+url.PathEscape(args[0]), nil, nil, func() {
				a.printf("machine %s removed\n", args[0])
			})
		},
	}
	cmd.AddCommand(add, list, remove, a.machineDiscoverCommand(&r))
	return cmd
}

func (a *app) protectCommand() *cobra.Command {
	var r remote
	var body api.ProtectJSON
	cmd := &cobra.Command{
		Use:   "protect MACHINE --tier TIER [--policy POLICY]",
		Short: "Put a machine under a backup policy and a protection tier (server)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m api.MachineJSON
			return a.call(cmd.Context(), &r, "POST", "/v1/machines/"+url.PathEscape(args[0])+"/protect", body, &m, func() {
				a.printf("%s protected: tier %s, policy %s, next run %s\n", m.Name, m.Tier, orDash(m.Policy), when(m.NextRun))
			})
		},
	}
	a.addRemoteFlags(cmd, &r)
	cmd.Flags().StringVar(&body.Policy, "policy", "", "backup policy (may be empty only with a tier asking for no protection)")
	cmd.Flags().StringVar(&body.Tier, "tier", "", "protection tier")
	return cmd
}

func (a *app) backupNowCommand() *cobra.Command {
	var r remote
	var wait bool
	cmd := &cobra.Command{
		Use:   "backup-now MACHINE [--wait]",
		Short: "Queue a backup of a protected machine now (server)",
		Long:  help("backup-now"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.queueAndWait(cmd.Context(), &r, "/v1/machines/"+url.PathEscape(args[0])+"/backup", nil, wait)
		},
	}
	a.addRemoteFlags(cmd, &r)
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends")
	return cmd
}

func (a *app) jobCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "job", Short: "Jobs: backups, restores and maintenance the server runs (server)"}
	a.addRemoteFlags(cmd, &r)
	var filter catalog.JobFilter
	list := &cobra.Command{
		Use: "list [--machine NAME] [--state STATE]", Short: "List jobs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return getTable(cmd.Context(), a, &r, api.JobsPath(filter), "ID\tKIND\tMACHINE\tSTATE\tPROGRESS\tATTEMPT\tCREATED\tERROR", func(j catalog.Job) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s", j.ID[:12], j.Kind, orDash(j.Machine), j.State, progressText(j), j.Attempt, j.MaxAttempts, when(j.Created), j.Error)
			})
		},
	}
	list.Flags().StringVar(&filter.Machine, "machine", "", "only this machine's jobs")
	list.Flags().StringVar(&filter.State, "state", "", "only jobs in this state: queued, running, succeeded, failed, cancelled")
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a job", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var j catalog.Job
			return a.call(cmd.Context(), &r, "POST", "/v1/jobs/"+url.PathEscape(args[0])+"/cancel", nil, &j, func() {
				a.printf("job %s: %s%s\n", j.ID, j.State, map[bool]string{true: " (cancel requested)"}[j.Cancel && j.State == catalog.Running])
			})
		},
	}
	cmd.AddCommand(list, cancel, a.jobLogsCommand(&r))
	return cmd
}

func (a *app) tokenCommand() *cobra.Command {
	var r remote
	cmd := &cobra.Command{Use: "token", Short: "API tokens: for people (admin, operator, viewer) and agents (server)"}
	a.addRemoteFlags(cmd, &r)
	var role string
	add := &cobra.Command{
		Use:   "add NAME --role admin|operator|viewer|agent",
		Short: "Make a token and print its secret (shown once)",
		Long:  help("token-add"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t api.NewTokenJSON
			return a.call(cmd.Context(), &r, "POST", "/v1/tokens", api.NewTokenJSON{Name: args[0], Role: role}, &t, func() {
				a.printf("%s\n", t.Secret)
			})
		},
	}
	add.Flags().StringVar(&role, "role", "viewer", "admin, operator, viewer or agent")
	list := listCommand(a, &r, "list", "List tokens (never their secrets)", "/v1/tokens", "NAME\tROLE\tCREATED\tREVOKED", func(t catalog.Token) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s", t.Name, t.Role, when(t.Created), when(t.Revoked))
	})
	revoke := &cobra.Command{
		Use: "revoke NAME", Short: "Revoke a token from now on", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), &r, "DELETE", "/v1/tokens/"+url.PathEscape(args[0]), nil, nil, func() {
				a.printf("token %s revoked\n", args[0])
			})
		},
	}
	cmd.AddCommand(add, list, revoke)
	return cmd
}

// queueAndWait posts a job request and prints the job; with wait it
// follows the job until it ends and fails unless it succeeded.
func (a *app) queueAndWait(ctx context.Context, r *remote, path string, body any, wait bool) error {
	c, err := a.client(r)
	if err != nil {
		return err
	}
	j, err := c.RunJob(ctx, path, body, wait, func(j catalog.Job) {
		if !a.jsonOut {
			a.printf("job %s queued; waiting\n", j.ID)
		}
	})
	if err != nil {
		return err
	}
	if !wait {
		return a.emit(j, func() { a.printf("job %s queued\n", j.ID) })
	}
	a.emit(j, func() { a.printf("job %s %s\n", j.ID, j.State) })
	return api.JobError(j)
}
