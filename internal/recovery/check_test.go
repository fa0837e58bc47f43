package recovery

import "testing"

// A recorded image path is where in-place restore writes: only a clean
// absolute path, as lifeboat records it, is accepted from a vault.
func TestCheckImagePath(t *testing.T) {
	for path, ok := range map[string]bool{
		"":                          true,
		"/var/lib/images/vm.qcow2":  true,
		"images/vm.qcow2":           false,
		"/var/lib/../../etc/shadow": false,
		"/var/lib/images//vm.raw":   false,
		"/tmp/a\nb":                 false,
	} {
		p := &Point{Machine: "vm1", Consistency: Crash, Disks: []Disk{{Name: "vda", Size: 1, Image: path}}}
		if err := p.Check(); (err == nil) != ok {
			t.Errorf("image %q: Check() = %v, want ok=%v", path, err, ok)
		}
	}
}
