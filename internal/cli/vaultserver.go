package cli

import (
	"fmt"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/secrets"
)

// vaultAddCommand registers a vault with a server, with the credentials
// the server keeps for it.
func (a *app) vaultAddCommand() *cobra.Command {
	var r remote
	var v catalog.Vault
	var keyFile string
	var noPassword bool
	cmd := &cobra.Command{
		Use:   "add NAME --url URL [--password-file F] [--s3-key-file F] [--copy-to NAME]",
		Short: "Register a vault with a lifeboat server, with its credentials (server)",
		Long:  help("vault-add"),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if v.URL == "" {
				return usageError{fmt.Errorf("--url: required: the vault's directory or s3:// URL")}
			}
			body := api.VaultJSON{Vault: v}
			body.Name = args[0]
			if !noPassword {
				pw, err := a.passphrase()
				if err != nil {
					return err
				}
				body.Password = string(pw)
			}
			if keyFile != "" {
				raw, err := os.ReadFile(keyFile)
				if err != nil {
					return usageError{fmt.Errorf("reading --s3-key-file: %w", err)}
				}
				if body.S3, err = secrets.ParseEnvFile(raw); err != nil {
					return usageError{fmt.Errorf("--s3-key-file %s: %w", keyFile, err)}
				}
			}
			var out catalog.Vault
			return a.call(cmd.Context(), &r, "PUT", "/v1/vaults/"+url.PathEscape(args[0]), body, &out, func() {
				fmt.Fprintf(a.env.Stdout, "vault %s registered: %s (credentials kept by the server)\n", out.Name, out.URL)
			})
		},
	}
	a.addRemoteFlags(cmd, &r)
	f := cmd.Flags()
	f.StringVar(&v.URL, "url", "", "the vault's directory (absolute) or s3://BUCKET/PREFIX URL")
	f.StringVar(&v.CopyTo, "copy-to", "", "name of the vault this one is copied to")
	f.StringVar(&keyFile, "s3-key-file", "", "file of S3 settings as KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …)")
	f.BoolVar(&noPassword, "no-password", false, "keep no passphrase: agents unlock the vault with their own")
	return cmd
}

// vaultListCommand lists the vaults a server knows (never credentials).
func (a *app) vaultListCommand() *cobra.Command {
	var r remote
	cmd := listCommand(a, &r, "list", "List the vaults a lifeboat server knows (server)", "/v1/vaults", "NAME\tURL\tCOPY TO", func(v catalog.Vault) string {
		return fmt.Sprintf("%s\t%s\t%s", v.Name, v.URL, orDash(v.CopyTo))
	})
	a.addRemoteFlags(cmd, &r)
	return cmd
}
