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
