package job

import (
	"errors"
	"testing"
)

// A drill's sandbox has no network, no display and its own console log:
// boot settings asking otherwise are refused, from the CLI's flags and
// from the API alike, as are two probes and a bad console pattern.
func TestDrillValidate(t *testing.T) {
	ok := Drill{Machine: "web1", Point: "latest", Vault: "/srv/vault", Boot: Boot{Network: "none", Accel: "tcg", Kernel: "/boot/k"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a good drill: %v", err)
	}
	for name, c := range map[string]struct {
		change func(*Drill)
		field  string
	}{
		"network":     {func(d *Drill) { d.Boot.Network = "user" }, "boot"},
		"vnc":         {func(d *Drill) { d.Boot.VNC = "127.0.0.1:0" }, "boot"},
		"serial log":  {func(d *Drill) { d.Boot.SerialLog = "/tmp/console" }, "boot"},
		"two probes":  {func(d *Drill) { d.Probe, d.ProbeSerial = "true", "login:" }, "probe"},
		"bad pattern": {func(d *Drill) { d.ProbeSerial = "(" }, "probe_serial"},
		"timeout":     {func(d *Drill) { d.Timeout = -1 }, "timeout"},
	} {
		d := ok
		c.change(&d)
		var ie *InvalidError
		if err := d.Validate(); !errors.As(err, &ie) || ie.Field != c.field {
			t.Errorf("%s: Validate = %v, want an error on %s", name, err, c.field)
		} else if c.field == "boot" && ie.Reason != "a drill runs with no network, no display and its own console log" {
			t.Errorf("%s: reason %q", name, ie.Reason)
		}
	}
}
