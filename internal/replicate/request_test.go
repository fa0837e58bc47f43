package replicate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/replica"
)

func TestParseSeeds(t *testing.T) {
	for _, c := range []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"vd0=/a.qcow2", "vd1=/b=c"}, map[string]string{"vd0": "/a.qcow2", "vd1": "/b=c"}, ""},
		{[]string{"vd0"}, nil, `--seed "vd0": want DISK=IMAGE`},
		{[]string{"=x"}, nil, `--seed "=x": want DISK=IMAGE`},
		{[]string{"vd0="}, nil, `--seed "vd0=": want DISK=IMAGE`},
	} {
		got, err := ParseSeeds(c.in)
		if c.wantErr != "" {
			if err == nil || err.Error() != c.wantErr || !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseSeeds(%q): %v, want invalid %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Fatalf("ParseSeeds(%q) = %v, %v", c.in, got, err)
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("ParseSeeds(%q)[%s] = %q, want %q", c.in, k, got[k], v)
			}
		}
	}
}

func TestReadSecretAndLoad(t *testing.T) {
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "tok"), filepath.Join(dir, "empty")
	os.WriteFile(good, []byte("  s3cret\n"), 0o600)
	os.WriteFile(empty, []byte("\n \n"), 0o600)
	if s, err := ReadSecret(good, "--token-file"); err != nil || s != "s3cret" {
		t.Fatalf("ReadSecret = %q, %v", s, err)
	}
	for file, want := range map[string]string{
		"":                         "--token-file is required",
		empty:                      "--token-file " + empty + " is empty",
		filepath.Join(dir, "none"): "reading --token-file: open ",
	} {
		_, err := ReadSecret(file, "--token-file")
		if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ReadSecret(%q): %v, want invalid %q...", file, err, want)
		}
	}
	var m Machine
	if err := m.Load(filepath.Join(dir, "none.json"), nil); err == nil || !errors.Is(err, ErrInvalid) ||
		!strings.HasPrefix(err.Error(), "reading --definition: ") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing definition: %v", err)
	}
	if err := m.Load(good, []string{"vd0=/x"}); err != nil || string(m.Definition) != "  s3cret\n" || m.Seed["vd0"] != "/x" {
		t.Fatalf("Load: %v, %+v", err, m)
	}
}

func TestFailoverRequestValidate(t *testing.T) {
	ok := replica.FailoverOptions{Point: "latest"}
	for _, c := range []struct {
		r    FailoverRequest
		want string
	}{
		{FailoverRequest{Machine: "db1", Options: ok}, ""},
		{FailoverRequest{Options: ok}, "--machine or --group is required"},
		{FailoverRequest{Machine: "db1", Cleanup: true, Options: replica.FailoverOptions{Test: true}}, "--test-cleanup takes no other failover option"},
		{FailoverRequest{Machine: "db1", Planned: true, Site: "dr1"}, "--planned fails over"},
		{FailoverRequest{Machine: "db1", Planned: true, PointGiven: true}, "--planned fails over"},
		{FailoverRequest{Machine: "db1", Planned: true}, ""},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{DisksOnly: true}}, "--disks-only and --to go together"},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{To: "/srv"}}, "--disks-only and --to go together"},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{DisksOnly: true, To: "/srv"}}, ""},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{ExportNBD: "unix:/run/db1.sock", Test: true}}, ""},
		{FailoverRequest{Machine: "db1", Planned: true, Options: replica.FailoverOptions{ExportNBD: "192.0.2.1:10809"}}, ""},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{ExportNBD: "nowhere"}}, "--export-nbd: "},
		{FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{ExportNBD: "unix:/x", DisksOnly: true, To: "/srv"}}, "--export-nbd serves"},
		{FailoverRequest{Machine: "db1", Cleanup: true, Options: replica.FailoverOptions{ExportNBD: "unix:/x"}}, "--export-nbd serves"},
	} {
		err := c.r.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.r, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, ErrInvalid) || !IsInvalid(err) {
			t.Errorf("%+v: %v, want invalid %q", c.r, err, c.want)
		}
	}
	// Failover checks the request before asking any site.
	cfg := OpenConfig(t.TempDir())
	if _, err := cfg.Failover(context.Background(), FailoverRequest{Machine: "db1", Options: replica.FailoverOptions{To: "/x"}}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Failover of an invalid request: %v", err)
	}
	if IsInvalid(&SiteError{Code: "not_found"}) || !IsInvalid(&SiteError{Code: "invalid"}) {
		t.Fatal("IsInvalid of site errors")
	}
}

func TestGroupFailoverRequestValidate(t *testing.T) {
	disks := replica.FailoverOptions{DisksOnly: true, To: "/srv"}
	for _, c := range []struct {
		r    GroupFailoverRequest
		want string
	}{
		{GroupFailoverRequest{Group: "g"}, ""},
		{GroupFailoverRequest{Group: "g", Planned: true}, ""},
		{GroupFailoverRequest{Group: "g", Options: disks}, ""},
		{GroupFailoverRequest{Group: "g", Machine: "db1"}, "--group fails the whole group over"},
		{GroupFailoverRequest{Group: "g", Planned: true, Cleanup: true}, "--planned, --test, --test-cleanup and --disks-only exclude"},
		{GroupFailoverRequest{Group: "g", Cleanup: true, Options: replica.FailoverOptions{Test: true}}, "--planned, --test, --test-cleanup and --disks-only exclude"},
		{GroupFailoverRequest{Group: "g", Options: replica.FailoverOptions{Test: true, DisksOnly: true, To: "/srv"}}, "--planned, --test, --test-cleanup and --disks-only exclude"},
		{GroupFailoverRequest{Group: "g", Options: replica.FailoverOptions{DisksOnly: true}}, "--disks-only and --to go together"},
		{GroupFailoverRequest{Group: "g", Options: replica.FailoverOptions{To: "/srv"}}, "--disks-only and --to go together"},
		{GroupFailoverRequest{Group: "g", Planned: true, Site: "dr1"}, "--planned runs on the source host"},
		{GroupFailoverRequest{Group: "g", Options: replica.FailoverOptions{ExportNBD: "unix:/x"}}, "--export-nbd serves one machine"},
	} {
		err := c.r.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.r, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !IsInvalid(err) {
			t.Errorf("%+v: %v, want invalid %q", c.r, err, c.want)
		}
	}
	// GroupFailover checks the request before asking any site, and names
	// a group with no member here as not found.
	cfg := OpenConfig(t.TempDir())
	if _, err := cfg.GroupFailover(context.Background(), GroupFailoverRequest{Group: "g", Machine: "db1"}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("GroupFailover of an invalid request: %v", err)
	}
	if _, err := cfg.GroupFailover(context.Background(), GroupFailoverRequest{Group: "g"}, nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GroupFailover of an unknown group: %v", err)
	}
}

// Run refuses a machine or a group this host does not replicate before
// running anything; with neither it follows the host's machines until its
// context ends.
func TestRun(t *testing.T) {
	cfg := OpenConfig(t.TempDir())
	ctx := context.Background()
	if err := cfg.Run(ctx, "db1", "", Runner{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Run of an unknown machine: %v", err)
	}
	if err := cfg.Run(ctx, "", "g", Runner{}); !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "group g") {
		t.Fatalf("Run of an unknown group: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cfg.Run(ctx, "", "", Runner{}) }()
	select {
	case err := <-done:
		t.Fatalf("Run of every machine returned before its context ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run of every machine outlived its context")
	}
}

func TestSelectedAndStatuses(t *testing.T) {
	dir := t.TempDir()
	cfg := OpenConfig(dir)
	// Nothing enabled: an empty list, which scripts read as [] in JSON.
	if sts, err := cfg.Statuses(context.Background(), "", time.Now()); err != nil || sts == nil || len(sts) != 0 {
		t.Fatalf("Statuses with nothing enabled = %#v, %v; want an empty, non-nil list", sts, err)
	}
	if _, err := cfg.Selected(""); err != ErrNoMachines {
		t.Fatalf("Selected with no machine: %v", err)
	}
	if _, err := cfg.Selected("db1"); !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("Selected of an unknown machine: %v", err)
	}
	tok := filepath.Join(dir, "tok")
	os.WriteFile(tok, []byte("t"), 0o600)
	if err := cfg.AddSite(Site{Name: "dr1", URL: "http://127.0.0.1:1", TokenFile: tok}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"db1", "web1"} {
		if err := cfg.Enable(Machine{Name: n, QMP: "/run/" + n + ".qmp", Target: "dr1"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := cfg.Selected("")
	if err != nil || len(all) != 2 {
		t.Fatalf("Selected all: %v, %v", all, err)
	}
	one, err := cfg.Selected("web1")
	if err != nil || len(one) != 1 || one[0].Name != "web1" {
		t.Fatalf("Selected web1: %v, %v", one, err)
	}
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	sts, err := cfg.Statuses(context.Background(), "", now)
	if err != nil || len(sts) != 2 || sts[0].State != StateStopped || sts[1].Target != "dr1" {
		t.Fatalf("Statuses: %+v, %v", sts, err)
	}
	if _, err := cfg.Statuses(context.Background(), "nope", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Statuses of an unknown machine: %v", err)
	}
}

func TestStatusText(t *testing.T) {
	cut := time.Now()
	for _, c := range []struct {
		st         Status
		state, lag string
	}{
		{Status{State: StateStopped}, StateStopped, "-"},
		{Status{State: "initial-sync", Progress: &Progress{Done: 42, Total: 100}}, "initial-sync 42%", "-"},
		{Status{State: "initial-sync", Progress: &Progress{}}, "initial-sync", "-"},
		{Status{State: "protected", LastCut: &cut, LagSeconds: 1.46}, "protected", "1.5s"},
	} {
		if c.st.StateText() != c.state || c.st.LagText() != c.lag {
			t.Errorf("%+v: %q, %q; want %q, %q", c.st, c.st.StateText(), c.st.LagText(), c.state, c.lag)
		}
	}
}

func TestSetPaused(t *testing.T) {
	dir := t.TempDir()
	cfg := OpenConfig(dir)
	tok := filepath.Join(dir, "tok")
	os.WriteFile(tok, []byte("t"), 0o600)
	if err := cfg.AddSite(Site{Name: "dr1", URL: "http://127.0.0.1:1", TokenFile: tok}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []Machine{{Name: "db1", Group: "shop"}, {Name: "web1", Group: "shop"}, {Name: "solo"}} {
		m.QMP, m.Target = "/run/"+m.Name+".qmp", "dr1"
		if err := cfg.Enable(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cfg.SetPaused("db1", "", true); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--group shop") {
		t.Fatalf("pausing a group member alone: %v", err)
	}
	if _, err := cfg.SetPaused("nosuch", "", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pausing an unknown machine: %v", err)
	}
	names, err := cfg.SetPaused("", "shop", true)
	if err != nil || len(names) != 2 {
		t.Fatalf("pausing the group: %v, %v", names, err)
	}
	now := time.Now()
	for name, want := range map[string]string{"db1": StatePaused, "web1": StatePaused, "solo": StateStopped} {
		st, err := cfg.MachineStatus(context.Background(), name, now)
		if err != nil || st.State != want {
			t.Fatalf("%s: state %q, %v; want %q", name, st.State, err, want)
		}
	}
	if _, err := cfg.SetPaused("", "shop", false); err != nil {
		t.Fatal(err)
	}
	if st, _ := cfg.MachineStatus(context.Background(), "db1", now); st.State != StateStopped {
		t.Fatalf("after resume with no runner: %q, want stopped", st.State)
	}
}
