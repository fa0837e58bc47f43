package cli

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/spf13/cobra"
)

// keySheet is what vault key export writes: enough to read the vault from
// another host when this one is lost.
type keySheet struct {
	Vault      string `json:"vault"`
	VaultID    string `json:"vault_id"`
	KeySlot    string `json:"key_slot"`
	Passphrase string `json:"passphrase"`
	Created    string `json:"vault_created"`
}

func (s keySheet) write(w io.Writer) error {
	_, err := fmt.Fprintf(w, `lifeboat vault recovery sheet — keep it away from this host, as safe as the backups
vault:       %s
vault id:    %s
created:     %s
key slot:    %s
passphrase:  %s

On any host with lifeboat, with the passphrase in a file readable only by you:
  lifeboat --vault %s --password-file FILE points
  lifeboat server --recover-from %s   (a lost server: its catalog is saved in the vault)
`, s.Vault, s.VaultID, s.Created, s.KeySlot, s.Passphrase, s.Vault, s.Vault)
	return err
}

// vaultKeyExportCommand is `lifeboat vault key export`.
func (a *app) vaultKeyExportCommand() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "export [--to FILE]",
		Short: "Print (or write to a new file) the vault's recovery sheet: location, ID and passphrase, checked",
		Long:  help("vault-key-export"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			pw, err := a.passphrase()
			if err != nil {
				return err
			}
			keys, err := v.Keys(cmd.Context())
			if err != nil {
				return err
			}
			cfg := v.Config()
			sheet := keySheet{Vault: a.vaultURL, VaultID: cfg.ID, Passphrase: string(pw), Created: cfg.Created.UTC().Format("2006-01-02 15:04:05 UTC")}
			for _, k := range keys {
				if k.InUse {
					sheet.KeySlot = k.Name
				}
			}
			if to == "" {
				return a.emit(sheet, func() { sheet.write(a.env.Stdout) })
			}
			// Created new, never through a link, readable by its owner only.
			f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("--to: %w (the sheet is only written to a new file)", err)
			}
			if err := sheet.write(f); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return a.emit(map[string]string{"written": to, "vault_id": sheet.VaultID}, func() {
				if !a.quiet {
					a.printf("recovery sheet of vault %s written to %s (0600): move it off this host\n", sheet.VaultID, to)
				}
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "write the sheet to this new file (mode 0600) instead of printing it")
	return cmd
}
