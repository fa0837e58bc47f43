package location

import (
	"fmt"
	"os"
	"strings"
)

// ReadPasswordFile reads a passphrase from path: the file's content
// without its trailing newline. warning is not empty when the file is
// readable by its group or by everyone: whoever can read it can open the
// vault.
func ReadPasswordFile(path string) (pass []byte, warning string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	if m := st.Mode().Perm(); m&0o044 != 0 {
		who := "its group"
		if m&0o004 != 0 {
			who = "every user"
		}
		warning = fmt.Sprintf("password file %s is readable by %s (mode %04o): whoever reads it can open the vault; chmod 600 it", path, who, m)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	p := strings.TrimRight(string(data), "\r\n")
	if p == "" {
		return nil, warning, fmt.Errorf("%s is empty", path)
	}
	return []byte(p), warning, nil
}

// Passphrase reads a vault's passphrase: from file when given (from names
// it in errors: the flag that gave it), else from the file
// LIFEBOAT_PASSWORD_FILE names, else LIFEBOAT_PASSWORD, the first found.
// warn gets the warning about a file others can read. No passphrase, or a
// file that cannot be read, is ErrInvalid.
func Passphrase(file, from string, getenv func(string) string, warn func(string)) ([]byte, error) {
	if file == "" {
		file, from = getenv("LIFEBOAT_PASSWORD_FILE"), "LIFEBOAT_PASSWORD_FILE"
	}
	if file != "" {
		return PassphraseFile(from, file, warn)
	}
	if p := getenv("LIFEBOAT_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	return nil, invalid("no passphrase: use --password-file, or set LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD")
}

// PassphraseFile is ReadPasswordFile of file, which from (a flag or a
// variable) named, with its warning given to warn; an error is ErrInvalid.
func PassphraseFile(from, file string, warn func(string)) ([]byte, error) {
	p, warning, err := ReadPasswordFile(file)
	if warning != "" && warn != nil {
		warn(warning)
	}
	if err != nil {
		return nil, invalidCause{fmt.Sprintf("reading %s: %v", from, err), err}
	}
	return p, nil
}

// invalidCause is bad input with its cause.
type invalidCause struct {
	msg   string
	cause error
}

func (e invalidCause) Error() string        { return e.msg }
func (e invalidCause) Is(target error) bool { return target == ErrInvalid }
func (e invalidCause) Unwrap() error        { return e.cause }

// SourcePassphrase is the passphrase of the vault a copy reads from: from
// file (--from-password-file) when given, else LIFEBOAT_FROM_PASSWORD, else
// ours (the passphrase of the copy itself).
func SourcePassphrase(file string, getenv func(string) string, warn func(string), ours func() ([]byte, error)) ([]byte, error) {
	switch {
	case file != "":
		return PassphraseFile("--from-password-file", file, warn)
	case getenv("LIFEBOAT_FROM_PASSWORD") != "":
		return []byte(getenv("LIFEBOAT_FROM_PASSWORD")), nil
	}
	return ours()
}
