package qmp_test

import (
	"testing"

	"lifeboat/internal/qmp"
)

func TestSocketAddressURI(t *testing.T) {
	for _, c := range []struct {
		addr   qmp.SocketAddress
		export string
		want   string
	}{
		{qmp.UnixSocket("/run/lifeboat/nbd.sock"), "vda", "nbd+unix:///vda?socket=%2Frun%2Flifeboat%2Fnbd.sock"},
		{qmp.UnixSocket("/tmp/a b"), "disk 1", "nbd+unix:///disk%201?socket=%2Ftmp%2Fa+b"},
		{qmp.InetSocket("127.0.0.1", 10809), "vda", "nbd://127.0.0.1:10809/vda"},
		{qmp.InetSocket("::1", 10809), "vda", "nbd://[::1]:10809/vda"},
	} {
		if got := c.addr.URI(c.export); got != c.want {
			t.Errorf("%v URI(%q) = %q, want %q", c.addr, c.export, got, c.want)
		}
	}
}
