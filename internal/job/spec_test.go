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
	qmpPath := live
	qmpPath.Disks = []Disk{{Name: "virtio0", Path: "/img/x.qcow2"}}
	if err := qmpPath.Validate(); err == nil {
		t.Fatal("QMP disk with a path accepted")
	}
}
