package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"lifeboat/internal/vault"
)

// vaultKeyCommand is `lifeboat vault key list|add|remove`.
func (a *app) vaultKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "List, add and remove the vault's named key slots",
		Long: `Every passphrase that opens a vault has a key slot: keys/<id> in the vault,
wrapping the vault's keys under that passphrase (Argon2id). Slots have names;
slots written before names existed are shown as slot-<8 hex digits> of their
object name. See docs/security.md, "Keys and revocation".`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the key slots",
		Long: `List the vault's key slots: name, creation time, the newest data key generation
each wraps, and which one the passphrase given opened (*). A slot below the
vault's newest generation reads only what was written before the rekey that
left it behind, and cannot write.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			keys, err := v.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"generation": v.Generation(), "keys": keys})
			}
			tw := tabwriter.NewWriter(a.env.Stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "\tNAME\tCREATED\tGENERATION\tOBJECT")
			for _, k := range keys {
				mark, created := "", "-"
				if k.InUse {
					mark = "*"
				}
				if !k.Created.IsZero() {
					created = k.Created.Format("2006-01-02 15:04:05")
				}
				gen := fmt.Sprint(k.Generation)
				if k.Damaged != "" {
					gen = "damaged: " + k.Damaged
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, k.Name, created, gen, k.Object)
			}
			return tw.Flush()
		},
	}
	var name, newFile string
	add := &cobra.Command{
		Use:   "add --name NAME",
		Short: "Add a key slot for a new passphrase",
		Long: `Add a key slot named NAME (letters, digits, '.', '_', '@', '-'; up to 64)
wrapping the vault's keys under a new passphrase of at least 12 characters. The
vault is opened with the current passphrase (--password-file,
LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD); the new one comes from
--new-password-file, else LIFEBOAT_NEW_PASSWORD, else is asked for twice on the
terminal. Nothing is re-encrypted.`,
		Args: cobra.NoArgs,
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
			if err := vault.CheckNewPassphrase(np); err != nil {
				return err
			}
			if err := v.AddKey(cmd.Context(), name, np); err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"added": name, "generation": v.Generation()})
			}
			a.infof("added key slot %s\n", name)
			return nil
		},
	}
	add.Flags().StringVar(&name, "name", "", "name of the new key slot (required)")
	add.Flags().StringVar(&newFile, "new-password-file", "", "read the new passphrase from this file")
	var force bool
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a key slot",
		Long: `Remove the key slot NAME (or the slot whose object is keys/NAME): its
passphrase no longer opens the vault. The last slot is never removed, and the
slot the given passphrase opened only with --force.

Removing a slot is not enough against someone who kept a copy of it: with the
copy and the storage, the removed passphrase still reads everything sealed
with the data keys it wraps, including what is written later. Run
'lifeboat vault rekey' after removing it, so that what is written from then on
is sealed with a data key the removed slot never held (docs/security.md).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			gone, err := v.RemoveKey(cmd.Context(), args[0], force)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"removed": gone})
			}
			for _, k := range gone {
				a.infof("removed key slot %s (%s)\n", k.Name, k.Object)
			}
			a.infof("to keep it from reading what is written from now on, also run 'lifeboat vault rekey'\n")
			return nil
		},
	}
	remove.Flags().BoolVar(&force, "force", false, "remove the key slot even if it is the one the passphrase opened")
	cmd.AddCommand(list, add, remove)
	return cmd
}

// vaultRekeyCommand is `lifeboat vault rekey`.
func (a *app) vaultRekeyCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rekey [--force]",
		Short: "Seal what is written from now on with a new data key",
		Long: `Make a new data key (the next generation) that seals every object written from
now on: packs, index objects, manifests, points, prune plans. Older data keys
stay wrapped in the key slot, so every existing point still restores; nothing
is re-encrypted. The vault's format becomes version 3 (older lifeboat refuses
it).

Only the key slot of the passphrase given receives the new key, so the other
key slots are removed (--force is needed when there are any): add their
passphrases again with 'lifeboat vault key add'. A passphrase whose slot was
removed, even by someone who kept a copy of the slot, cannot read anything
written after the rekey. Vault copies take the new key on their next
'lifeboat vault copy'. See docs/security.md, "Keys and revocation".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			res, err := v.Rekey(cmd.Context(), force)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(res)
			}
			for _, k := range res.Removed {
				a.infof("removed key slot %s (%s)\n", k.Name, k.Object)
			}
			a.infof("rekeyed: new objects are sealed with data key generation %d; key slot %s holds every generation\n", res.Generation, res.Key)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the other key slots, which cannot receive the new key")
	return cmd
}

// infof prints a progress line on stderr unless --quiet.
func (a *app) infof(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.env.Stderr, format, args...)
	}
}

// newPassphrase reads a new passphrase from file, else LIFEBOAT_NEW_PASSWORD,
// else asks for it twice on the terminal.
func (a *app) newPassphrase(file string) ([]byte, error) {
	if file != "" {
		return a.readPasswordFile("--new-password-file", file)
	}
	if p := a.env.Getenv("LIFEBOAT_NEW_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
		return nil, usageError{errors.New("no new passphrase: use --new-password-file or LIFEBOAT_NEW_PASSWORD (or run on a terminal to be asked)")}
	}
	p1, err := a.prompt("new passphrase: ")
	if err != nil {
		return nil, err
	}
	p2, err := a.prompt("the same again: ")
	if err != nil {
		return nil, err
	}
	if p1 != p2 {
		return nil, usageError{errors.New("the two passphrases differ")}
	}
	if p1 == "" {
		return nil, usageError{errors.New("empty passphrase")}
	}
	return []byte(p1), nil
}

// prompt reads a line from the terminal on stdin with echo off.
func (a *app) prompt(msg string) (string, error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("reading the terminal: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("turning the terminal's echo off: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(a.env.Stderr, msg)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Fprintln(a.env.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading the passphrase: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
