package boot

import (
	"strings"
	"testing"
)

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		name, def string
		opts      Options
		want      []string // substrings of the joined command line, in order
		err       string
	}{
		{name: "virtio with boot order and a user NIC",
			def: `{"name": "web1-dr", "cpus": 2, "memory_mib": 1024, "disks": [{"name": "root", "file": "/r/root.qcow2", "format": "qcow2", "boot_order": 1}],
				"nics": [{"mac": "52:54:00:12:34:56"}]}`,
			opts: Options{QMPSocket: "/s/qmp.sock", Console: "/c.log"},
			want: []string{"qemu-system-x86_64", "-name web1-dr -accel tcg -m 1024 -smp 2", "-chardev socket,id=qmp,path=/s/qmp.sock,server=on,wait=off",
				"-serial file:/c.log", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=/r/root.qcow2",
				"virtio-blk-pci,drive=disk0,id=root,bootindex=1", "-nic user,model=virtio-net-pci,mac=52:54:00:12:34:56"}},
		{name: "isolated: no network whatever the NICs",
			def:  `{"name": "t", "disks": [{"name": "a", "file": "/a.raw"}], "nics": [{"network": "br0"}]}`,
			opts: Options{Isolated: true, Accel: "kvm"},
			want: []string{"-accel kvm -m 512 -smp 1", "driver=raw", "-nic none"}},
		{name: "scsi, sata, nvme, bridge, comma in a path, direct kernel boot",
			def: `{"name": "m", "disks": [{"name": "s0", "bus": "scsi", "file": "/x,y.raw"}, {"name": "s1", "bus": "scsi", "file": "/b"}, {"name": "h", "bus": "sata", "file": "/c"}, {"name": "n", "bus": "nvme", "file": "/d"}],
				"nics": [{"network": "br0", "model": "e1000"}], "kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0"}`,
			want: []string{"file.filename=/x,,y.raw", "-device virtio-scsi-pci,id=scsi0", "scsi-hd,bus=scsi0.0,drive=disk0,id=s0", "scsi-hd,bus=scsi0.0,drive=disk1",
				"ide-hd,drive=disk2", "nvme,serial=n,drive=disk3", "-nic bridge,br=br0,model=e1000", "-kernel /k -initrd /i -append console=ttyS0"}},
		{name: "a disk without an image", def: `{"name": "m", "disks": [{"name": "a"}]}`, err: "names no image"},
		{name: "no disks", def: `{"name": "m"}`, err: "no disks"},
		{name: "bad name", def: `{"name": "-x", "disks": [{"name": "a", "file": "/a"}]}`, err: "invalid machine name"},
		{name: "bad accelerator", def: `{"name": "m", "disks": [{"name": "a", "file": "/a"}]}`, opts: Options{Accel: "hvf"}, err: "accelerator"},
		{name: "bad bus", def: `{"name": "m", "disks": [{"name": "a", "file": "/a", "bus": "usb"}]}`, err: "bus"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin, args, err := Command([]byte(c.def), c.opts)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := bin + " " + strings.Join(args, " ")
			rest := line
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q missing (or out of order) in\n%s", w, line)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}
