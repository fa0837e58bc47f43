package restore

import (
	"errors"
	"testing"

	"lifeboat/internal/recovery"
)

func TestPlanFormats(t *testing.T) {
	def := `{"schema":"lifeboat.machine/v1","name":"vm","cpus":1,"memory_mib":64,"disks":[{"name":"root","format":"qcow2"},{"name":"data"}]}`
	p := &recovery.Point{Definition: []byte(def), Disks: []recovery.Disk{{Name: "root"}, {Name: "data", Format: "vmdk"}}}
	for _, c := range []struct {
		req  Request
		want []string // path:format per target
		err  error
	}{
		{Request{Dir: "/d"}, []string{"/d/root.qcow2:qcow2", "/d/data.raw:raw"}, nil},
		{Request{Dir: "/d", Format: "raw"}, []string{"/d/root.raw:raw", "/d/data.raw:raw"}, nil},
		{Request{Disk: "root", ToFile: "/x.qcow2"}, []string{"/x.qcow2:qcow2"}, nil},
		{Request{Disk: "root", ToFile: "/x.raw"}, []string{"/x.raw:raw"}, nil},
		{Request{Disk: "root", ToFile: "/x"}, []string{"/x:qcow2"}, nil},
		{Request{Disk: "data", ToFile: "/x"}, []string{"/x:raw"}, nil},
		{Request{Disk: "data", ToFile: "/x.img", Format: "raw"}, []string{"/x.img:raw"}, nil},
		{Request{Disk: "root", ToFile: "/x.qcow2", Format: "raw"}, nil, ErrFormat},
		{Request{Disk: "root", ToFile: "/x.vmdk"}, nil, ErrFormat},
		{Request{Dir: "/d", Format: "vmdk"}, nil, ErrFormat},
		{Request{Disk: "nope", Dir: "/d"}, nil, recovery.ErrNoPoint},
		{Request{InPlace: true}, []string{":", ":"}, nil},
	} {
		ts, err := Plan(p, c.req)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Plan(%+v): %v, want %v", c.req, err, c.err)
			}
			continue
		}
		if err != nil || len(ts) != len(c.want) {
			t.Errorf("Plan(%+v) = %v, %v", c.req, ts, err)
			continue
		}
		for i, tg := range ts {
			if got := tg.Path + ":" + tg.Format; got != c.want[i] {
				t.Errorf("Plan(%+v)[%d] = %s, want %s", c.req, i, got, c.want[i])
			}
		}
	}
}
