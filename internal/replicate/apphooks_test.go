package replicate

import (
	"errors"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/replica"
)

// Hooks run around app-consistent cuts only, and come from the host's own
// settings: a server's spec carrying hooks is refused, not run.
func TestHookSettings(t *testing.T) {
	base := Machine{Name: "db1", QMP: "/run/db1.qmp", Target: "dr", GuestAgent: "/run/db1.qga"}
	for _, c := range []struct {
		m    func(m *Machine)
		want string
	}{
		{func(m *Machine) { m.PreHook = "true"; m.Policy.AppInterval = time.Hour }, ""},
		{func(m *Machine) { m.PostHook = "true"; m.Policy.AppInterval = time.Hour }, ""},
		{func(m *Machine) { m.PreHook = "true" }, "give --app-interval"},
		{func(m *Machine) { m.PostHook = "true" }, "give --app-interval"},
		{func(m *Machine) { m.PreHook, m.HookTimeout, m.Policy.AppInterval = "true", -time.Second, time.Hour }, "hook timeout"},
	} {
		m := base
		c.m(&m)
		err := m.Validate()
		if (err == nil) != (c.want == "") || err != nil && (!strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid)) {
			t.Errorf("%+v: %v, want %q", m, err, c.want)
		}
	}
	c := configWithSite(t)
	hooked := base
	hooked.PreHook, hooked.Policy = "touch /tmp/x", replica.Policy{AppInterval: time.Hour}
	got, err := c.Apply([]Machine{hooked})
	if err == nil || !strings.Contains(err.Error(), "carries hooks") || len(got.Enabled) != 0 {
		t.Fatalf("Apply of a spec with hooks: %+v, %v", got, err)
	}
	if _, err := c.Machine("db1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a spec with hooks was enabled: %v", err)
	}
}
