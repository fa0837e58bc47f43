package replicate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Applied says what Apply changed on this host.
type Applied struct {
	Enabled  []string // enabled or changed
	Disabled []string
	// Skipped are specs for machines enabled on this host by hand
	// (replicate enable): those are left as they are.
	Skipped []string
}

// Apply makes this host replicate what a lifeboat server enabled for it
// (specs): each is enabled (or changed) and marked Managed; a Managed
// machine the server no longer lists is disabled here (its replica stays
// at the target). Machines enabled by hand are never touched. A spec that
// cannot be enabled (its site not named on this host, say) is an error;
// the others are applied all the same.
func (c *Config) Apply(specs []Machine) (Applied, error) {
	var out Applied
	var errs []error
	want := map[string]bool{}
	for _, m := range specs {
		want[m.Name] = true
		m.Managed = true
		if m.PreHook != "" || m.PostHook != "" {
			// A server never makes an agent run commands: hooks are set
			// on the host itself (replicate enable there).
			errs = append(errs, fmt.Errorf("%w: the replication of %s from the server carries hooks; set hooks with replicate enable on the host", ErrInvalid, m.Name))
			continue
		}
		old, err := c.Machine(m.Name)
		switch {
		case err == nil && !old.Managed:
			out.Skipped = append(out.Skipped, m.Name)
			continue
		case err == nil && same(old, m):
			continue
		case err != nil && !errors.Is(err, ErrNotFound):
			errs = append(errs, err)
			continue
		}
		if err := c.Enable(m); err != nil {
			errs = append(errs, fmt.Errorf("enabling the replication of %s: %w", m.Name, err))
			continue
		}
		out.Enabled = append(out.Enabled, m.Name)
	}
	local, err := c.Machines()
	if err != nil {
		return out, errors.Join(append(errs, err)...)
	}
	for _, m := range local {
		if m.Managed && !want[m.Name] {
			if err := c.Disable(m.Name); err != nil {
				errs = append(errs, fmt.Errorf("disabling the replication of %s: %w", m.Name, err))
				continue
			}
			out.Disabled = append(out.Disabled, m.Name)
		}
	}
	return out, errors.Join(errs...)
}

func same(a, b Machine) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
