package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"lifeboat/internal/agent"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/server"
)

func (a *app) serverCommand() *cobra.Command {
	var cfg server.Config
	var noAgent, replicating bool
	cmd := &cobra.Command{
		Use:   "server [--data DIR] [--listen ADDR] [--db postgres://…]",
		Short: "Run the control plane: API, dashboard, scheduler, alerts",
		Long:  help("server"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Clock = a.env.Clock
			cfg.Out = a.env.Stdout
			cfg.Log = slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			cfg.VaultOptions = a.options()
			cfg.Getenv = a.env.Getenv
			cfg.Passphrase = a.vaultPassphrase
			if cfg.NoDefaultVault || cfg.RecoverFrom != "" {
				if cmd.Flags().Changed("vault") {
					return usageError{errors.New("--vault names the default vault: it cannot go with --no-default-vault or --recover-from (which makes the recovered vault the default)")}
				}
			} else {
				cfg.VaultURL = a.vaultURL // --vault or LIFEBOAT_VAULT
			}
			if !noAgent {
				runner, err := a.jobRunner(cfg.DataDir)
				if err != nil {
					return err
				}
				cfg.Runner = runner
				if replicating {
					tmpl, err := a.replicationTemplate(cfg.Log)
					if err != nil {
						return err
					}
					cfg.Replicate = &tmpl
				}
			} else if replicating {
				return usageError{errors.New("--replicate needs the built-in agent: drop --no-agent")}
			}
			return server.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "/var/lib/lifeboat", "data directory: the SQLite catalog and the first admin token")
	f.StringVar(&cfg.DB, "db", "", "catalog database: postgres://… (default: DATA/catalog.db, SQLite)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the API")
	f.BoolVar(&cfg.InsecureListen, "insecure-listen", false, "allow plain HTTP on an address that is not loopback")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the certificate's private key (PEM)")
	f.StringArrayVar(&cfg.Webhooks, "webhook", nil, "POST alerts (raised and cleared) as JSON to this URL; repeatable")
	f.DurationVar(&cfg.Tick, "tick", 0, "how often the scheduler runs (default 10s)")
	f.DurationVar(&cfg.DrillEvery, "drill-every", 0, "drill the latest point of every protected machine this often, on its agent, unless its tier says (tier add --drill-every) (e.g. 24h; default: never); a failed drill raises drill-failed")
	f.BoolVar(&noAgent, "no-agent", false, "run no built-in agent: jobs wait for separate agents")
	f.BoolVar(&cfg.NoDefaultVault, "no-default-vault", false, "make no vault in DATA/vault when the server knows none")
	f.StringVar(&cfg.Host, "name", "", "name of the built-in agent (default: the host name)")
	f.BoolVar(&replicating, "replicate", false, "the built-in agent also runs the continuous replication of this host's machines, as lifeboat agent --replicate does")
	f.StringVar(&cfg.RecoverFrom, "recover-from", "", "rebuild a lost server: fill the new (empty) catalog from the newest catalog snapshot in the vault at this URL, which becomes the default vault")
	return cmd
}

// jobRunner runs jobs as this process's commands would: vaults unlocked
// with its passphrase, S3 settings from its environment.
// With a server's data directory, its default vault is unlocked with the
// passphrase kept there.
func (a *app) jobRunner(dataDir string) (*agent.Jobs, error) {
	exe, err := a.executable()
	if err != nil {
		return nil, err
	}
	return &agent.Jobs{Getenv: a.env.Getenv, Executable: exe, Options: a.options(), Seen: a.book(),
		Passphrase: server.KeptPassphrase(dataDir, a.vaultPassphrase)}, nil
}

// vaultPassphrase is the passphrase a server or agent unlocks the vault at
// url with: this process's.
func (a *app) vaultPassphrase(url string) ([]byte, error) {
	pw, err := a.passphrase()
	if err != nil {
		return nil, fmt.Errorf("no passphrase for vault %s: start lifeboat with --password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD", url)
	}
	return pw, nil
}

func (a *app) agentCommand() *cobra.Command {
	var r remote
	var concurrency int
	var name string
	var replicating bool
	cmd := &cobra.Command{
		Use:   "agent --server URL --token-file F [--name HOST] [--replicate]",
		Short: "Run the jobs a lifeboat server queues for this host",
		Long:  help("agent"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(&r)
			if err != nil {
				return err
			}
			runner, err := a.jobRunner("")
			if err != nil {
				return err
			}
			name, info := agent.HostInfo(name, false)
			log := slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			log.Info("lifeboat agent started", "server", c.URL, "host", name)
			ag := &agent.Agent{Client: c, Runner: runner, Concurrency: concurrency, Info: info, Log: log,
				Offers: func(ctx context.Context) any { return libvirt.Offers(ctx, "") }}
			if replicating {
				tmpl, err := a.replicationTemplate(log)
				if err != nil {
					return err
				}
				ag.Replicate = &tmpl
			}
			if err := ag.Run(cmd.Context()); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	a.addRemoteFlags(cmd, &r)
	cmd.Flags().IntVar(&concurrency, "concurrency", 1, "jobs run at once")
	cmd.Flags().StringVar(&name, "name", "", "host name reported with heartbeats (jobs go to the token's name)")
	cmd.Flags().BoolVar(&replicating, "replicate", false, "also run the continuous replication of this host's enabled machines")
	return cmd
}
