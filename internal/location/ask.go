package location

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"lifeboat/internal/vault"
)

// invalid is bad input whose message stands on its own; it is ErrInvalid
// for errors.Is.
type invalid string

func (e invalid) Error() string        { return string(e) }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

// AskNew asks for a new passphrase twice on the terminal in, with its
// echo off, prompting on out. An in that is not a terminal, two answers
// that differ and an empty one are ErrInvalid.
func AskNew(in *os.File, out io.Writer) ([]byte, error) {
	if _, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err != nil {
		return nil, invalid("no new passphrase: use --new-password-file or LIFEBOAT_NEW_PASSWORD (or run on a terminal to be asked)")
	}
	r := bufio.NewReader(in)
	p1, err := Ask(in, r, out, "new passphrase: ")
	if err != nil {
		return nil, err
	}
	p2, err := Ask(in, r, out, "the same again: ")
	if err != nil {
		return nil, err
	}
	if p1 != p2 {
		return nil, invalid("the two passphrases differ")
	}
	if p1 == "" {
		return nil, invalid("empty passphrase")
	}
	return []byte(p1), nil
}

// Ask reads a line from the terminal tty through r with its echo off,
// after printing msg on out.
func Ask(tty *os.File, r *bufio.Reader, out io.Writer, msg string) (string, error) {
	fd := int(tty.Fd())
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
	fmt.Fprint(out, msg)
	line, err := r.ReadString('\n')
	fmt.Fprintln(out)
	if err != nil {
		return "", fmt.Errorf("reading the passphrase: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// PrefixedEnv returns a getenv that looks up prefix+NAME (NAME without a
// leading LIFEBOAT_) first and falls back to the plain variable, so two
// vaults on two S3 servers can have their own endpoints and credentials.
func PrefixedEnv(prefix string, getenv func(string) string) func(string) string {
	return func(k string) string {
		if v := getenv(prefix + strings.TrimPrefix(k, "LIFEBOAT_")); v != "" {
			return v
		}
		if k == "AWS_SESSION_TOKEN" && getenv(prefix+"AWS_ACCESS_KEY_ID") != "" {
			return "" // a session token goes with its own keys only
		}
		return getenv(k)
	}
}

// NewPassphrase is a new passphrase: from file (--new-password-file) when
// given, else LIFEBOAT_NEW_PASSWORD, else asked for twice on the terminal
// in (AskNew). It must be strong enough (vault.CheckNewPassphrase).
func NewPassphrase(file string, getenv func(string) string, in *os.File, out io.Writer, warn func(string)) (p []byte, err error) {
	switch {
	case file != "":
		p, err = PassphraseFile("--new-password-file", file, warn)
	case getenv("LIFEBOAT_NEW_PASSWORD") != "":
		p = []byte(getenv("LIFEBOAT_NEW_PASSWORD"))
	default:
		p, err = AskNew(in, out)
	}
	if err != nil {
		return nil, err
	}
	return p, vault.CheckNewPassphrase(p)
}
