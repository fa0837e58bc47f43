package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"lifeboat/internal/agent"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/server"
)

func (a *app) serverCommand() *cobra.Command {
	var cfg server.Config
	var noAgent bool
	cmd := &cobra.Command{
		Use:   "server [--data DIR] [--listen ADDR] [--db postgres://…]",
		Short: "Run the control plane: API, dashboard, scheduler, alerts",
		Long: `Run lifeboat's control plane until interrupted: the HTTP/JSON API (described
at /openapi.json), the catalog of machines, protection tiers, backup policies,
jobs and alerts, and the scheduler that queues each protected machine's
backups on its policy's schedule and watches every machine's RPO.

The same address serves a web dashboard at / (open it in a browser and paste
a token): machines by RPO state, points, jobs and their logs, alerts, vaults,
and a "Back up now" button. It speaks only the API; the token stays in the
browser tab (sessionStorage), no cookie is set.

Zero configuration: the catalog is an SQLite file in --data (default
/var/lib/lifeboat), the API listens on 127.0.0.1:8080. The first start makes an
admin token, prints it once and writes it to DATA/admin.token (mode 0600);
give it to the other commands with --token-file or LIFEBOAT_TOKEN. Unless the
server already knows a vault (or --no-default-vault), it also makes the vault
"default" in DATA/vault with a generated passphrase, kept in
DATA/vault.passphrase (0600) and printed once: keep a copy elsewhere. Policies
that name no vault use it.

--db postgres://USER@HOST/DB keeps the catalog in PostgreSQL instead; several
servers on one PostgreSQL share the work and never queue or run a job twice.
Jobs are leased: a server or agent that dies mid-job loses its lease after 60 s
and the job is retried (30 s, doubling, at most 3 attempts for backups).

The API is served over plain HTTP on loopback addresses only, unless
--tls-cert and --tls-key are given (HTTPS) or --insecure-listen says otherwise.

Alerts (an RPO missed, a machine's backups failing 3 times in a row, an agent
silent for 2 minutes) are logged, listed at /v1/alerts and POSTed as JSON to
every --webhook URL when raised and when cleared.

A schedule slot missed while no server ran is made up once at start, not
once per missed slot.

The server runs a built-in agent for this host (named after it; its token is
kept in DATA/agent.token), which runs the jobs of machines added without
--agent or with this host's name — through the same code as 'lifeboat
backup' — and keeps each vault open between jobs. It unlocks vaults with the
server's --password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD.
--no-agent leaves every job to separate 'lifeboat agent' processes.

The catalog is saved into the default vault whenever what it keeps changes
(tiers, vaults, policies, machines and their protection, hashed tokens) and at
least daily, sealed like the vault's other objects; the newest 3 snapshots are
kept. On a new host, with an empty --data (or a new --db),
'lifeboat server --recover-from VAULT_URL' rebuilds the catalog from the
newest snapshot, indexes the recovery points found in the vaults it names,
and makes a new admin token (DATA/admin.token). The vault's passphrase comes
from --password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD; for a vault
in DATA/vault it is then kept in DATA/vault.passphrase again. Agents keep
their tokens; the built-in agent gets a new one. Job history and alerts start
afresh.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Clock = a.env.Clock
			cfg.Out = a.env.Stdout
			cfg.Log = slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			cfg.VaultOptions = a.options()
			cfg.Getenv = a.env.Getenv
			cfg.Passphrase = a.vaultPassphrase
			if !noAgent {
				runner, err := a.jobRunner(cfg.DataDir)
				if err != nil {
					return err
				}
				cfg.Runner = runner
			}
			err := server.Run(cmd.Context(), cfg)
			if errors.Is(err, server.ErrConfig) {
				return usageError{err}
			}
			return err
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
	f.DurationVar(&cfg.DrillEvery, "drill-every", 0, "drill the latest point of every protected machine this often, on its agent (e.g. 24h; default: never); a failed drill raises drill-failed")
	f.BoolVar(&noAgent, "no-agent", false, "run no built-in agent: jobs wait for separate agents")
	f.BoolVar(&cfg.NoDefaultVault, "no-default-vault", false, "make no vault in DATA/vault when the server knows none")
	f.StringVar(&cfg.Host, "name", "", "name of the built-in agent (default: the host name)")
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
		Passphrase: func(url string) ([]byte, error) {
			if dataDir != "" {
				if pw, ok := server.DefaultVaultPassphrase(dataDir, url); ok {
					return pw, nil
				}
			}
			return a.vaultPassphrase(url)
		}}, nil
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
		Long: `Run the jobs a lifeboat server queues for this host until interrupted: register
and heartbeat, claim the jobs of this host's machines (and of machines that
name no agent), run each through the same code as 'lifeboat backup', and
report progress, log lines and the outcome. The vaults the jobs use are
opened once and kept open between jobs.

The agent is known by its token's name: make one with
'lifeboat token add HOST --role agent' on a host that has an admin token, and
give it here with --token-file (or LIFEBOAT_TOKEN). Vaults are unlocked with
--password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD.

A server that is down or restarting is retried with backoff; a job running
meanwhile finishes and its outcome is delivered when the server is back. A
job cancelled through the server, or whose lease the server gave away, is
stopped.

With --replicate the agent also runs the continuous replication of this
host's machines (lifeboat replicate enable; docs/replication.md), as
lifeboat replicate run does, following machines enabled or disabled while it
runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(&r)
			if err != nil {
				return err
			}
			runner, err := a.jobRunner("")
			if err != nil {
				return err
			}
			if name == "" {
				name, _ = os.Hostname()
			}
			info, _ := json.Marshal(map[string]any{"host": name})
			log := slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			log.Info("lifeboat agent started", "server", c.URL, "host", name)
			if replicating {
				stop, err := a.startReplication(cmd.Context(), log)
				if err != nil {
					return err
				}
				defer stop()
			}
			ag := &agent.Agent{Client: c, Runner: runner, Concurrency: concurrency, Info: info, Log: log,
				Offers: func(ctx context.Context) any { return libvirt.Offers(ctx, "") }}
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
