package nbd

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// NBD_OPT_LIST, NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT against
// qemu-nbd and against our own server.
func TestQueries(t *testing.T) {
	dir := shortTempDir(t)
	img, _ := sparseImage(t, dir, 2<<20, [][2]int64{{0, 4096}}, 30)
	qsock := filepath.Join(dir, "q.sock")
	p := startPeer(t, "qemu-nbd", "--persistent", "--shared=4", "--format=raw", "--export-name=disk",
		"--description=a qemu disk", "--read-only", "--socket="+qsock, img)
	p.waitDial(t, "unix", qsock)
	e := fileExport(t, "ours", img, false)
	e.Description = "our disk"
	ts := startServer(t, e)
	ctx := testCtx(t)

	for _, c := range []struct {
		sock, export, desc string
		readOnly           bool
	}{{qsock, "disk", "a qemu disk", true}, {ts.sock, "ours", "our disk", false}} {
		list, err := List(ctx, sockURI(c.sock, ""))
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != c.export {
			t.Fatalf("List = %+v, want the one export %q", list, c.export)
		}
		info, err := Info(ctx, sockURI(c.sock, c.export))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 2<<20 || info.Name != c.export || info.Description != c.desc ||
			(info.Flags&FlagReadOnly != 0) != c.readOnly || info.MinBlock == 0 {
			t.Fatalf("Info = %+v", info)
		}
		ctxs, err := ListMetaContexts(ctx, sockURI(c.sock, c.export), "base:")
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ctxs) != "[base:allocation]" {
			t.Fatalf("ListMetaContexts(base:) = %v", ctxs)
		}
		_, err = Info(ctx, sockURI(c.sock, "missing"))
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Reply != repErrUnknown {
			t.Fatalf("Info on a missing export: %v", err)
		}
	}
}
