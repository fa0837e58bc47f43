package job

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestBackupValidate(t *testing.T) {
	ok := Backup{Machine: "web1", Vault: "/srv/vault", Source: Source{Disks: []Disk{{Name: "root", Path: "/img/web1.raw"}}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	live := Backup{Machine: "vm1", Vault: "s3://b/v", Consistency: "file", Source: Source{QMP: "/run/vm1.qmp", GuestAgent: "/run/vm1.qga", Disks: []Disk{{Name: "virtio0"}}}}
	if err := live.Validate(); err != nil {
		t.Fatalf("valid live spec refused: %v", err)
	}
	for _, srv := range []string{"unix:/run/n.sock", "/run/n.sock", "unix:"} {
		l := live
		l.NBDServer = srv
		if err := l.Validate(); (err == nil) != (srv == "unix:/run/n.sock") {
			t.Errorf("nbd server %q: Validate() = %v", srv, err)
		}
	}
	for _, tc := range []struct {
		name, field string
		mod         func(b *Backup)
	}{
		{"bad machine", "machine", func(b *Backup) { b.Machine = "../etc" }},
		{"no vault", "vault", func(b *Backup) { b.Vault = "" }},
		{"no disks", "disks", func(b *Backup) { b.Disks = nil }},
		{"relative path", "disks[0].path", func(b *Backup) { b.Disks[0].Path = "web1.raw" }},
		{"unknown URL", "disks[0].path", func(b *Backup) { b.Disks[0].Path = "http://x/y" }},
		{"twice", "disks[1].name", func(b *Backup) { b.Disks = append(b.Disks, b.Disks[0]) }},
		{"bad disk name", "disks[0].name", func(b *Backup) { b.Disks[0].Name = "a/b" }},
		{"consistency", "consistency", func(b *Backup) { b.Consistency = "perfect" }},
		{"hooks without app", "pre_hook", func(b *Backup) { b.PreHook = "/bin/true" }},
		{"app without hook", "pre_hook", func(b *Backup) { b.Consistency = "app" }},
		{"agent without qmp", "guest_agent", func(b *Backup) { b.GuestAgent = "/run/x.qga" }},
		{"bitmap without nbd", "disks[0].path", func(b *Backup) { b.Bitmap = "b0" }},
		{"nbd server without qmp", "nbd_server", func(b *Backup) { b.NBDServer = "unix:/run/n.sock" }},
		{"broken definition", "definition", func(b *Backup) { b.Definition = json.RawMessage(`{"schema":"x"}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := ok
			b.Disks = append([]Disk(nil), ok.Disks...)
			tc.mod(&b)
			err := b.Validate()
			var ie *InvalidError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want an InvalidError", err)
			}
			if ie.Field != tc.field {
				t.Fatalf("field %q, want %q (%v)", ie.Field, tc.field, err)
			}
		})
	}
	nbd := Backup{Machine: "n", Vault: "/v", Source: Source{Bitmap: "b0", Disks: []Disk{{Name: "d", Path: "nbd+unix:///e?socket=/run/s"}}}}
	if err := nbd.Validate(); err != nil {
		t.Fatalf("NBD disk with a bitmap refused: %v", err)
	}
	lv := Backup{Machine: "web1", Vault: "/v", Consistency: "file", Source: Source{Libvirt: "web1", Connect: "qemu:///system", Disks: []Disk{{Name: "vda"}}}}
	if err := lv.Validate(); err != nil {
		t.Fatalf("valid libvirt spec refused: %v", err)
	}
	for _, tc := range []struct {
		name, field string
		mod         func(b *Backup)
	}{
		{"libvirt and qmp", "libvirt", func(b *Backup) { b.QMP = "/run/x.qmp" }},
		{"libvirt disk path", "disks[0].path", func(b *Backup) { b.Disks[0].Path = "/img/x.qcow2" }},
		{"libvirt guest agent", "guest_agent", func(b *Backup) { b.GuestAgent = "/run/x.qga" }},
		{"libvirt bitmap", "bitmap", func(b *Backup) { b.Bitmap = "b0" }},
		{"libvirt app", "consistency", func(b *Backup) { b.Consistency, b.PreHook = "app", "/bin/true" }},
		{"libvirt definition", "definition", func(b *Backup) { b.Definition = json.RawMessage(`{}`) }},
		{"connect without libvirt", "connect", func(b *Backup) { b.Libvirt, b.Disks = "", []Disk{{Name: "d", Path: "/img/d.raw"}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := lv
			b.Disks = append([]Disk(nil), lv.Disks...)
			tc.mod(&b)
			var ie *InvalidError
			if err := b.Validate(); !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("Validate() = %v, want an InvalidError on %s", err, tc.field)
			}
		})
	}
	for _, tc := range []struct {
		field string
		r     Restore
	}{
		{"libvirt_define", Restore{Machine: "m", Point: "latest", Vault: "/v", InPlace: true, LibvirtDefine: true}},
		{"start", Restore{Machine: "m", Point: "latest", Vault: "/v", Dir: "/r", Start: true}},
		{"name", Restore{Machine: "m", Point: "latest", Vault: "/v", Dir: "/r", Name: "x"}},
		{"name", Restore{Machine: "m", Point: "latest", Vault: "/v", Dir: "/r", LibvirtDefine: true, Name: "a/b"}},
	} {
		var ie *InvalidError
		if err := tc.r.Validate(); !errors.As(err, &ie) || ie.Field != tc.field {
			t.Fatalf("%+v: Validate() = %v, want an InvalidError on %s", tc.r, err, tc.field)
		}
	}
	if err := (Restore{Machine: "m", Point: "latest", Vault: "/v", Dir: "/r", LibvirtDefine: true, Name: "m-copy", Start: true}).Validate(); err != nil {
		t.Fatalf("valid libvirt restore refused: %v", err)
	}
	qmpPath := live
	qmpPath.Disks = []Disk{{Name: "virtio0", Path: "/img/x.qcow2"}}
	if err := qmpPath.Validate(); err == nil {
		t.Fatal("QMP disk with a path accepted")
	}
}

// --disk values of a machine: NAME=PATH, or a name alone for a live
// machine's disk; a path alone for a disk read by path is refused.
func TestSourceAddDisks(t *testing.T) {
	var s Source
	if err := s.AddDisks([]string{"root=/img/r.raw", "data=nbd://h/e"}); err != nil || len(s.Disks) != 2 ||
		s.Disks[0] != (Disk{Name: "root", Path: "/img/r.raw"}) || s.Disks[1] != (Disk{Name: "data", Path: "nbd://h/e"}) {
		t.Fatalf("named paths: %+v %v", s.Disks, err)
	}
	var ie *InvalidError
	if err := (&Source{}).AddDisks([]string{"/img/r.raw"}); !errors.As(err, &ie) || ie.Field != "disks" || ie.Reason != `"/img/r.raw": give NAME=PATH` {
		t.Fatalf("a bare path: %v", err)
	}
	for _, live := range []Source{{QMP: "/run/q.sock"}, {Libvirt: "web1"}} {
		if err := live.AddDisks([]string{"vda"}); err != nil || len(live.Disks) != 1 || live.Disks[0] != (Disk{Name: "vda"}) {
			t.Fatalf("a live machine's disk by name: %+v %v", live.Disks, err)
		}
	}
}
