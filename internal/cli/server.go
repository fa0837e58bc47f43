package cli

import (
	"errors"
	"log/slog"

	"github.com/spf13/cobra"

	"lifeboat/internal/server"
)

func (a *app) serverCommand() *cobra.Command {
	var cfg server.Config
	cmd := &cobra.Command{
		Use:   "server [--data DIR] [--listen ADDR] [--db postgres://…]",
		Short: "Run the control plane: API, scheduler, alerts",
		Long: `Run lifeboat's control plane until interrupted: the HTTP/JSON API (described
at /openapi.json), the catalog of machines, protection tiers, backup policies,
jobs and alerts, and the scheduler that queues each protected machine's
backups on its policy's schedule and watches every machine's RPO.

Zero configuration: the catalog is an SQLite file in --data (default
/var/lib/lifeboat), the API listens on 127.0.0.1:8080. The first start makes an
admin token, prints it once and writes it to DATA/admin.token (mode 0600);
give it to the other commands with --token-file or LIFEBOAT_TOKEN.

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
once per missed slot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Clock = a.env.Clock
			cfg.Out = a.env.Stdout
			cfg.Log = slog.New(slog.NewTextHandler(a.env.Stderr, nil))
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
	return cmd
}
