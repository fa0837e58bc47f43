package nbd

import (
	"context"
	"path/filepath"
	"testing"
)

// benchImage is a fully allocated image, so every read moves real data.
func benchImage(b *testing.B) string {
	dir := shortTempDir(b)
	path, _ := sparseImage(b, dir, 64<<20, [][2]int64{{0, 64 << 20}}, 40)
	return path
}

func benchSequentialReads(b *testing.B, c *Client) {
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	off := int64(0)
	for i := 0; i < b.N; i++ {
		if off+int64(len(buf)) > c.Size() {
			off = 0
		}
		if _, err := c.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += int64(len(buf))
	}
}

// BenchmarkReadQemuNBD: sequential 4 MiB reads through our client from
// qemu-nbd on a unix socket.
func BenchmarkReadQemuNBD(b *testing.B) {
	img := benchImage(b)
	sock := filepath.Join(filepath.Dir(img), "nbd.sock")
	p := startPeer(b, "qemu-nbd", "--persistent", "--format=raw", "--socket="+sock, img)
	p.waitDial(b, "unix", sock)
	c, err := Dial(context.Background(), sockURI(sock, ""))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchSequentialReads(b, c)
}

// BenchmarkReadOwnServer: the same reads from our own server.
func BenchmarkReadOwnServer(b *testing.B) {
	img := benchImage(b)
	ts := startServer(b, fileExport(b, "d", img, true))
	c, err := Dial(context.Background(), ts.uri("d"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchSequentialReads(b, c)
}
