package replicate

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Apply enables what the server lists, changes what changed, disables the
// managed machines no longer listed, and never touches machines enabled
// by hand.
// configWithSite is a new state directory naming one site, "dr".
func configWithSite(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	c := OpenConfig(filepath.Join(dir, "state"))
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	if err := c.AddSite(Site{Name: "dr", URL: "http://127.0.0.1:1", TokenFile: token}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestApply(t *testing.T) {
	c := configWithSite(t)
	hand := Machine{Name: "hand", QMP: "/run/hand.qmp", Target: "dr"}
	if err := c.Enable(hand); err != nil {
		t.Fatal(err)
	}
	web := Machine{Name: "web", QMP: "/run/web.qmp", Target: "dr"}
	db := Machine{Name: "db", QMP: "/run/db.qmp", Target: "dr"}
	check := func(specs []Machine, want Applied, wantErr string) {
		t.Helper()
		got, err := c.Apply(specs)
		if (err == nil) != (wantErr == "") || err != nil && !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Apply: %v, want an error with %q", err, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Apply: %+v, want %+v", got, want)
		}
	}
	check([]Machine{web, db, {Name: "hand", QMP: "/run/other.qmp", Target: "dr"}}, Applied{Enabled: []string{"web", "db"}, Skipped: []string{"hand"}}, "")
	if m, _ := c.Machine("web"); !m.Managed || m.QMP != "/run/web.qmp" {
		t.Fatalf("web: %+v", m)
	}
	if m, _ := c.Machine("hand"); m.Managed || m.QMP != "/run/hand.qmp" {
		t.Fatalf("hand was changed: %+v", m)
	}
	// Nothing changed: nothing done.
	check([]Machine{web, db}, Applied{}, "")
	// web changes, db is no longer listed, a spec naming an unknown site
	// fails alone.
	web.Every = time.Second
	check([]Machine{web, {Name: "lost", QMP: "/run/lost.qmp", Target: "nosuch"}}, Applied{Enabled: []string{"web"}, Disabled: []string{"db"}}, "nosuch")
	if m, _ := c.Machine("web"); m.Every != time.Second {
		t.Fatalf("web not changed: %+v", m)
	}
	if _, err := c.Machine("db"); err == nil {
		t.Fatal("db still enabled")
	}
	// An empty list disables every managed machine, not the hand-made one.
	check(nil, Applied{Disabled: []string{"web"}}, "")
	ms, _ := c.Machines()
	if len(ms) != 1 || ms[0].Name != "hand" {
		t.Fatalf("left: %+v", ms)
	}
}
