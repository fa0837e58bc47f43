package boot

import (
	"errors"
	"strings"
	"testing"

	"lifeboat/internal/recovery"
)

func TestCommand(t *testing.T) {
	def := func(mod func(*recovery.Definition)) *recovery.Definition {
		d := &recovery.Definition{Schema: recovery.DefinitionSchema, Name: "web1", CPUs: 2, MemoryMiB: 1024,
			Disks: []recovery.DefinitionDisk{
				{Name: "data", Bus: "virtio", Format: "raw", File: "/srv/r/data.raw"},
				{Name: "root", Bus: "virtio", Format: "qcow2", BootOrder: 1, File: "/srv/r/root.qcow2"},
			},
			NICs: []recovery.DefinitionNIC{{Model: "virtio", MAC: "52:54:00:12:34:56"}}}
		if mod != nil {
			mod(d)
		}
		return d
	}
	tests := []struct {
		name string
		def  *recovery.Definition
		opts Options
		want string // the argv joined by spaces
		err  string
	}{
		{name: "defaults: boot disk first, no network, no display",
			def: def(nil), opts: Options{Accel: "tcg"},
			want: `qemu-system-x86_64 -name guest=web1 -nodefaults -no-user-config -accel tcg -machine q35 -smp 2 -m 1024 ` +
				`-blockdev {"driver":"qcow2","file":{"driver":"file","filename":"/srv/r/root.qcow2"},"node-name":"disk0"} ` +
				`-device virtio-blk-pci,drive=disk0,id=root,bootindex=1 ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/srv/r/data.raw"},"node-name":"disk1"} ` +
				`-device virtio-blk-pci,drive=disk1,id=data -display none`},
		{name: "kvm, user network with the MAC, sockets, serial log, overlay drive, kernel",
			def: def(nil), opts: Options{Accel: "kvm", Network: "user", QMPSocket: "/run/q.sock", GuestAgentSocket: "/run/g,a.sock",
				SerialLog: "/tmp/console.log", Drives: map[string]Drive{"data": {File: "/tmp/ov.qcow2", Format: "qcow2"}},
				Kernel: "/k", Initrd: "/i", Append: "console=ttyS0"},
			want: `qemu-system-x86_64 -name guest=web1 -nodefaults -no-user-config -accel kvm -machine q35 -smp 2 -m 1024 -cpu host ` +
				`-kernel /k -initrd /i -append console=ttyS0 ` +
				`-blockdev {"driver":"qcow2","file":{"driver":"file","filename":"/srv/r/root.qcow2"},"node-name":"disk0"} ` +
				`-device virtio-blk-pci,drive=disk0,id=root,bootindex=1 ` +
				`-blockdev {"driver":"qcow2","file":{"driver":"file","filename":"/tmp/ov.qcow2"},"node-name":"disk1"} ` +
				`-device virtio-blk-pci,drive=disk1,id=data ` +
				`-netdev user,id=net0 -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56 -display none ` +
				`-chardev file,id=serial0,path=/tmp/console.log -serial chardev:serial0 ` +
				`-chardev socket,id=qmp,path=/run/q.sock,server=on,wait=off -mon chardev=qmp,mode=control ` +
				`-device virtio-serial-pci,id=vser0 -chardev socket,id=qga0,path=/run/g,,a.sock,server=on,wait=off ` +
				`-device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0`},
		{name: "buses, uefi, bridge, vnc, e1000",
			def: def(func(d *recovery.Definition) {
				d.Firmware = "uefi"
				d.Disks = []recovery.DefinitionDisk{{Name: "a", Bus: "scsi", File: "/a"}, {Name: "b", Bus: "sata", File: "/b", BootOrder: 2},
					{Name: "c", Bus: "nvme", File: "/c"}, {Name: "d", Bus: "ide", File: "/d", BootOrder: 1}}
				d.NICs = []recovery.DefinitionNIC{{Model: "e1000"}}
			}),
			opts: Options{Accel: "tcg", Network: "bridge:br0", VNC: "127.0.0.1:3"},
			want: `qemu-system-x86_64 -name guest=web1 -nodefaults -no-user-config -accel tcg -machine q35 -smp 2 -m 1024 ` +
				`-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/d"},"node-name":"disk0"} -device ide-hd,bus=ide.0,drive=disk0,id=d,bootindex=1 ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/b"},"node-name":"disk1"} -device ide-hd,bus=ide.1,drive=disk1,id=b,bootindex=2 ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/a"},"node-name":"disk2"} -device virtio-scsi-pci,id=scsi0 -device scsi-hd,bus=scsi0.0,drive=disk2,id=a ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/c"},"node-name":"disk3"} -device nvme,serial=c,drive=disk3,id=c ` +
				`-netdev bridge,br=br0,id=net0 -device e1000,netdev=net0 -vga std -vnc 127.0.0.1:3`},
		{name: "default accel falls back from kvm to tcg", def: def(func(d *recovery.Definition) { d.Disks = d.Disks[:1] }),
			want: `qemu-system-x86_64 -name guest=web1 -nodefaults -no-user-config -accel kvm -accel tcg -machine q35 -smp 2 -m 1024 ` +
				`-blockdev {"driver":"raw","file":{"driver":"file","filename":"/srv/r/data.raw"},"node-name":"disk0"} -device virtio-blk-pci,drive=disk0,id=data -display none`},
		{name: "disk without a file", def: def(func(d *recovery.Definition) { d.Disks[0].File = "" }), err: "disk data names no file"},
		{name: "drive for an unknown disk", def: def(nil), opts: Options{Drives: map[string]Drive{"x": {File: "/x"}}}, err: `disk "x"`},
		{name: "bad accel", def: def(nil), opts: Options{Accel: "hvf"}, err: `accelerator "hvf"`},
		{name: "bad network", def: def(nil), opts: Options{Network: "bridge:"}, err: `network "bridge:"`},
		{name: "unknown nic model", def: def(func(d *recovery.Definition) { d.NICs[0].Model = "ne2k;rm" }), opts: Options{Network: "user"}, err: `model "ne2k;rm"`},
		{name: "initrd without kernel", def: def(nil), opts: Options{Initrd: "/i"}, err: "needs a kernel"},
		{name: "vmdk format", def: def(func(d *recovery.Definition) { d.Disks[0].Format = "vmdk" }), err: `format "vmdk"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argv, err := Command(tc.def, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Command: %v, want an ErrInvalid naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				return
			}
			if got := strings.Join(argv, " "); got != tc.want {
				t.Errorf("argv:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestParseAndNetworkOf(t *testing.T) {
	raw := []byte(`{"schema":"lifeboat.machine/v1","name":"web1","nics":[{"mac":"52:54:00:00:00:01","network":"br0"}],
		"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0"}`)
	def, kb, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if kb != (KernelBoot{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0"}) || def.Name != "web1" {
		t.Fatalf("Parse = %+v, %+v", def, kb)
	}
	if n := NetworkOf(def); n != "bridge:br0" {
		t.Fatalf("NetworkOf(bridge NIC) = %q", n)
	}
	def.NICs[0].Network = ""
	if n := NetworkOf(def); n != "user" {
		t.Fatalf("NetworkOf(plain NIC) = %q", n)
	}
	def.NICs = nil
	if n := NetworkOf(def); n != "none" {
		t.Fatalf("NetworkOf(no NIC) = %q", n)
	}
	for _, bad := range []string{`{`, `{"name":"../x"}`} {
		if _, _, err := Parse([]byte(bad)); err == nil {
			t.Fatalf("Parse(%s) accepted", bad)
		}
	}
}
