package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"lifeboat/internal/vaultserve"
)

func (a *app) vaultServeCommand() *cobra.Command {
	var cfg vaultserve.Config
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "serve --dir DIR --token-file F [--append-only] [--listen ADDR]",
		Short: "Serve a directory vault over HTTP(S), optionally append-only",
		Long: `Serve the directory vault --dir to other hosts over HTTP(S) until interrupted.
Hosts reach it as --vault lifeboat+https://HOST:PORT (lifeboat+http:// for plain
HTTP) with the token in --token-file given to them in LIFEBOAT_VAULT_TOKEN_FILE
(or LIFEBOAT_VAULT_TOKEN). The endpoint needs no passphrase: it stores the
vault's encrypted objects as they come.

--append-only makes the endpoint only create objects: a delete is refused, and
so is a write to a name that exists with other content. Hosts given only such an
endpoint can back up, copy into the vault and restore, but cannot remove or alter
a recovery point even when they are compromised: forget and prune there refuse
before changing anything. Run forget and prune on this machine, with --vault DIR.
Backups leave their finished session markers for prune to remove.

Plain HTTP is served on loopback addresses only, unless --tls-cert and --tls-key
are given (HTTPS) or --insecure-listen says otherwise. Clients check the
certificate against the system's roots; for a private CA, give them
SSL_CERT_FILE=ca.pem. The token must have at
least 16 characters; make one with 'head -c 32 /dev/urandom | base64'.`,
		Example: `  lifeboat vault serve --dir /srv/vault --append-only --listen 0.0.0.0:8443 \
      --token-file /etc/lifeboat/vault.token --tls-cert cert.pem --tls-key key.pem
  LIFEBOAT_VAULT_TOKEN_FILE=/etc/lifeboat/vault.token \
      lifeboat backup --vault lifeboat+https://backup1:8443 --machine web1 --disk /dev/vg0/web1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Dir == "" || tokenFile == "" {
				return usageError{errors.New("vault serve needs --dir and --token-file")}
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return usageError{fmt.Errorf("--token-file: %w", err)}
			}
			cfg.Token = strings.TrimSpace(string(tok))
			cfg.Log = slog.New(slog.NewTextHandler(a.env.Stderr, nil))
			cfg.Ready = func(url string) {
				mode := "read-write"
				if cfg.AppendOnly {
					mode = "append-only"
				}
				a.printf("lifeboat vault serve: %s at lifeboat+%s (%s)\n", cfg.Dir, url, mode)
			}
			err = vaultserve.Run(cmd.Context(), cfg)
			if errors.Is(err, vaultserve.ErrConfig) {
				return usageError{err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", "", "the directory vault to serve")
	f.StringVar(&tokenFile, "token-file", "", "file holding the token clients must present")
	f.BoolVar(&cfg.AppendOnly, "append-only", false, "refuse deletes and overwrites: clients may only add objects")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address to listen on")
	f.BoolVar(&cfg.InsecureListen, "insecure-listen", false, "allow plain HTTP on an address that is not loopback")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the certificate's private key (PEM)")
	return cmd
}
