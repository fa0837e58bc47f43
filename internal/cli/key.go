package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"lifeboat/internal/location"
	"lifeboat/internal/vault"
)

// vaultKeyCommand is `lifeboat vault key list|add|remove`.
func (a *app) vaultKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "List, add and remove the vault's named key slots",
		Long:  help("vault-key"),
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the key slots",
		Long:  help("vault-key-list"),
		Args:  cobra.NoArgs,
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			keys, err := v.Keys(ctx)
			if err != nil {
				return err
			}
			return a.emit(map[string]any{"generation": v.Generation(), "keys": keys}, func() {
				table(a, "\tNAME\tCREATED\tGENERATION\tOBJECT", keys, func(k vault.KeyInfo) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", map[bool]string{true: "*"}[k.InUse], k.Name, k.CreatedText(), k.GenerationText(), k.Object)
				})
			})
		}),
	}
	var name, newFile string
	add := &cobra.Command{
		Use:   "add --name NAME",
		Short: "Add a key slot for a new passphrase",
		Long:  help("vault-key-add"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := vault.ValidKeyName(name); err != nil {
				return usageError{fmt.Errorf("--name: %w", err)}
			}
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			np, err := a.newPassphrase(newFile)
			if err != nil {
				return err
			}
			if err := v.AddKey(cmd.Context(), name, np); err != nil {
				return err
			}
			return a.emit(map[string]any{"added": name, "generation": v.Generation()}, func() { a.infof("added key slot %s\n", name) })
		},
	}
	add.Flags().StringVar(&name, "name", "", "name of the new key slot (required)")
	add.Flags().StringVar(&newFile, "new-password-file", "", "read the new passphrase from this file")
	var force bool
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a key slot",
		Long:  help("vault-key-remove"),
		Args:  cobra.ExactArgs(1),
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			gone, err := v.RemoveKey(ctx, args[0], force)
			if err != nil {
				return err
			}
			return a.emit(map[string]any{"removed": gone}, func() {
				a.printRemoved(gone)
				a.infof("to keep it from reading what is written from now on, also run 'lifeboat vault rekey'\n")
			})
		}),
	}
	remove.Flags().BoolVar(&force, "force", false, "remove the key slot even if it is the one the passphrase opened")
	cmd.AddCommand(list, add, remove, a.vaultKeyExportCommand())
	return cmd
}

// vaultRekeyCommand is `lifeboat vault rekey`.
func (a *app) vaultRekeyCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rekey [--force]",
		Short: "Seal what is written from now on with a new data key",
		Long:  help("vault-rekey"),
		Args:  cobra.NoArgs,
		RunE: a.withVault(func(ctx context.Context, v *vault.Vault, args []string) error {
			res, err := v.Rekey(ctx, force)
			if err != nil {
				return err
			}
			return a.emit(res, func() {
				a.printRemoved(res.Removed)
				a.infof("rekeyed: new objects are sealed with data key generation %d; key slot %s holds every generation\n", res.Generation, res.Key)
			})
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the other key slots, which cannot receive the new key")
	return cmd
}

// newPassphrase is location.NewPassphrase with --new-password-file file.
func (a *app) newPassphrase(file string) ([]byte, error) {
	return location.NewPassphrase(file, a.env.Getenv, os.Stdin, a.env.Stderr, a.warn)
}

func (a *app) printRemoved(gone []vault.KeyInfo) {
	for _, k := range gone {
		a.infof("removed key slot %s (%s)\n", k.Name, k.Object)
	}
}
