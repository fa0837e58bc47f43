package boot

import (
	"strings"
	"testing"

	"lifeboat/internal/testenv"
)

// FuzzParse: a definition as a replication target receives it (boot.Parse,
// then the command line that starts it) is refused, or every value taken
// from it stays one value of QEMU's option syntax: no -device or -netdev
// argument gains a key the definition chose.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schema":"lifeboat.machine/v1","name":"web1","cpus":2,"memory_mib":1024,"disks":[{"name":"vda","bus":"virtio","format":"raw","file":"/r/vda.raw","boot_order":1}],` +
		`"nics":[{"model":"virtio","mac":"52:54:00:12:34:56","network":"br0"}],"kernel":"/k","cmdline":"console=ttyS0"}`))
	f.Add([]byte(`{"name":"m","disks":[{"name":"a,b","bus":"nvme","file":"/x,y"}],"nics":[{"mac":"52:54:00:12:34:56,romfile=/etc/shadow"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var argv []string
		testenv.CheckAlloc(t, len(data), 256, 0, func() {
			def, kb, err := Parse(data)
			if err != nil {
				return
			}
			argv, _ = Command(def, Options{Accel: "tcg", Network: NetworkOf(def), Kernel: kb.Kernel, Initrd: kb.Initrd, Append: kb.Cmdline})
		})
		allowed := map[string]bool{"drive": true, "id": true, "bootindex": true, "werror": true, "rerror": true, "bus": true,
			"serial": true, "netdev": true, "mac": true, "br": true}
		for i := 1; i < len(argv); i++ {
			if argv[i-1] != "-device" && argv[i-1] != "-netdev" {
				continue
			}
			// A value's commas are doubled: split on the single ones.
			parts := strings.Split(strings.ReplaceAll(argv[i], ",,", "\x00"), ",")
			for _, p := range parts[1:] {
				if k, _, _ := strings.Cut(p, "="); !allowed[k] {
					t.Fatalf("%s %q has key %q from the definition", argv[i-1], argv[i], k)
				}
			}
		}
	})
}

// TestDefinitionValuesEscaped: a definition's NIC MAC and disk name that
// carry QEMU options (as a replication source may send them: its
// definition is not validated as a vault's) stay one value each.
func TestDefinitionValuesEscaped(t *testing.T) {
	def, _, err := Parse([]byte(`{"name":"m","disks":[{"name":"a,file=/etc/shadow","bus":"nvme","file":"/x"}],` +
		`"nics":[{"mac":"52:54:00:12:34:56,romfile=/etc/shadow"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := Command(def, Options{Accel: "tcg", Network: "user"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(argv, " ")
	for _, want := range []string{"mac=52:54:00:12:34:56,,romfile=/etc/shadow", "serial=a,,file=/etc/shadow"} {
		if !strings.Contains(got, want) {
			t.Errorf("argv does not escape %q:\n%s", want, got)
		}
	}
}
