package location

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPrefixedEnv(t *testing.T) {
	env := map[string]string{
		"LIFEBOAT_PASSWORD": "plain", "LIFEBOAT_FROM_PASSWORD": "from",
		"AWS_ACCESS_KEY_ID": "plainkey", "AWS_SESSION_TOKEN": "plaintoken", "LIFEBOAT_S3_ENDPOINT": "http://a",
		"LIFEBOAT_COPY_AWS_ACCESS_KEY_ID": "copykey",
	}
	get := func(k string) string { return env[k] }
	from, cp := PrefixedEnv("LIFEBOAT_FROM_", get), PrefixedEnv("LIFEBOAT_COPY_", get)
	for _, c := range []struct {
		get       func(string) string
		key, want string
	}{
		{from, "LIFEBOAT_PASSWORD", "from"},
		{cp, "LIFEBOAT_PASSWORD", "plain"},
		{from, "LIFEBOAT_S3_ENDPOINT", "http://a"},
		{from, "AWS_ACCESS_KEY_ID", "plainkey"},
		{from, "AWS_SESSION_TOKEN", "plaintoken"},
		{cp, "AWS_ACCESS_KEY_ID", "copykey"},
		// A session token goes with its own keys only.
		{cp, "AWS_SESSION_TOKEN", ""},
	} {
		if got := c.get(c.key); got != c.want {
			t.Errorf("%s = %q, want %q", c.key, got, c.want)
		}
	}
}

// TestAskNewNeedsATerminal: without a terminal there is nobody to ask.
func TestAskNewNeedsATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.WriteString("a long passphrase\na long passphrase\n")
	w.Close()
	p, err := AskNew(r, io.Discard)
	if !errors.Is(err, ErrInvalid) || p != nil || err.Error() != "no new passphrase: use --new-password-file or LIFEBOAT_NEW_PASSWORD (or run on a terminal to be asked)" {
		t.Fatalf("AskNew on a pipe: %q, %v", p, err)
	}
}

// pty opens a pseudo-terminal: the controlling side and the terminal.
func pty(t *testing.T) (ctl, tty *os.File) {
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	if err := unix.IoctlSetPointerInt(int(ctl.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ctl.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ctl, tty
}

// TestAskNewOnATerminal: asked twice with the echo off, and the echo is
// back afterwards.
func TestAskNewOnATerminal(t *testing.T) {
	for _, c := range []struct{ typed, want, err string }{
		{"a long passphrase\na long passphrase\n", "a long passphrase", ""},
		{"one\ntwo\n", "", "the two passphrases differ"},
		{"\n\n", "", "empty passphrase"},
	} {
		ctl, tty := pty(t)
		go ctl.WriteString(c.typed)
		var prompts strings.Builder
		p, err := AskNew(tty, &prompts)
		if c.err != "" {
			if !errors.Is(err, ErrInvalid) || err.Error() != c.err {
				t.Errorf("typed %q: %q, %v; want %q", c.typed, p, err, c.err)
			}
		} else if err != nil || string(p) != c.want {
			t.Errorf("typed %q: %q, %v", c.typed, p, err)
		}
		if prompts.String() != "new passphrase: \nthe same again: \n" {
			t.Errorf("prompts %q", prompts.String())
		}
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil || tio.Lflag&unix.ECHO == 0 {
			t.Errorf("echo not restored: %v", err)
		}
	}
}
