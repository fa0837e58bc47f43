package cli

import (
	"log/slog"

	"github.com/spf13/cobra"

	"lifeboat/internal/vaultserve"
)

func (a *app) vaultServeCommand() *cobra.Command {
	var cfg vaultserve.Config
	cmd := &cobra.Command{
		Use:     "serve --dir DIR --token-file F [--append-only] [--listen ADDR]",
		Short:   "Serve a directory vault over HTTP(S), optionally append-only",
		Long:    help("vault-serve"),
		Example: help("vault-serve.example"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			cfg.Ready = func(url string) {
				mode := "read-write"
				if cfg.AppendOnly {
					mode = "append-only"
				}
				a.printf("lifeboat vault serve: %s at lifeboat+%s (%s)\n", cfg.Dir, url, mode)
			}
			return vaultserve.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", "", "the directory vault to serve")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file holding the token clients must present")
	f.BoolVar(&cfg.AppendOnly, "append-only", false, "refuse deletes and overwrites: clients may only add objects")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address to listen on")
	f.BoolVar(&cfg.InsecureListen, "insecure-listen", false, "allow plain HTTP on an address that is not loopback")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the certificate's private key (PEM)")
	return cmd
}
