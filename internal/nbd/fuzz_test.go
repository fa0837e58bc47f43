package nbd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Builders for protocol messages, for seeds.

func optReply(opt, typ uint32, data []byte) []byte {
	b := be.AppendUint64(nil, magicOptionReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func serverGreeting() []byte {
	b := be.AppendUint64(nil, magicInit)
	b = be.AppendUint64(b, magicOption)
	return be.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
}

func infoExportReply(opt uint32, size uint64, flags uint16) []byte {
	d := be.AppendUint16(nil, infoExport)
	d = be.AppendUint64(d, size)
	return optReply(opt, repInfo, be.AppendUint16(d, flags))
}

func blockSizeReply(opt uint32, minB, pref, maxB uint32) []byte {
	d := be.AppendUint16(nil, infoBlockSize)
	d = be.AppendUint32(d, minB)
	d = be.AppendUint32(d, pref)
	return optReply(opt, repInfo, be.AppendUint32(d, maxB))
}

func structChunk(flags, typ uint16, cookie uint64, payload []byte) []byte {
	b := be.AppendUint32(nil, magicStructReply)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func clientOption(opt uint32, data []byte) []byte {
	b := be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func clientRequest(cmd uint16, flags CmdFlags, cookie, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, requestHeaderSize)
	putRequest(b, cmd, flags, cookie, off, length)
	return append(b, payload...)
}

func nameData(name string, tail []byte) []byte {
	return append(append(be.AppendUint32(nil, uint32(len(name))), name...), tail...)
}

func metaQuery(export string, queries ...string) []byte {
	d := nameData(export, nil)
	d = be.AppendUint32(d, uint32(len(queries)))
	for _, q := range queries {
		d = append(be.AppendUint32(d, uint32(len(q))), q...)
	}
	return d
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// FuzzClientHandshake feeds arbitrary server bytes to the client's option
// phase: parsing option replies must never panic or loop.
func FuzzClientHandshake(f *testing.F) {
	good := join(serverGreeting(),
		optReply(optStructuredReply, repAck, nil),
		optReply(optSetMetaContext, repMetaContext, append(be.AppendUint32(nil, 1), ContextBaseAllocation...)),
		optReply(optSetMetaContext, repAck, nil),
		infoExportReply(optGo, 1<<20, FlagHasFlags|FlagSendFlush),
		blockSizeReply(optGo, 1, 4096, 32<<20),
		optReply(optGo, repInfo, append(be.AppendUint16(nil, infoDescription), "desc"...)),
		optReply(optGo, repAck, nil))
	f.Add(byte(0), good)
	f.Add(byte(0), join(serverGreeting(), optReply(optStructuredReply, repErrUnsup, nil),
		optReply(optGo, repErrUnsup, nil), be.AppendUint16(be.AppendUint64(nil, 1<<20), 1)))
	f.Add(byte(0), join(serverGreeting(), optReply(optStructuredReply, repAck, nil),
		optReply(optSetMetaContext, repErrUnsup, []byte("no")), optReply(optGo, repErrUnknown, []byte("no such export"))))
	f.Add(byte(1), join(serverGreeting(), optReply(optList, repServer, nameData("a", []byte("desc"))), optReply(optList, repAck, nil)))
	f.Add(byte(2), join(serverGreeting(), infoExportReply(optInfo, 512, 3), blockSizeReply(optInfo, 512, 4096, 1<<20), optReply(optInfo, repAck, nil)))
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		switch mode % 3 {
		case 0:
			c, err := handshakeClient(rw, "disk", config{metaContexts: []string{ContextBaseAllocation, DirtyBitmapContext("b0")}})
			if err == nil {
				if c.info.MinBlock == 0 || c.maxPayload <= 0 || c.maxPayload%int64(c.info.MinBlock) != 0 {
					t.Fatalf("bad limits after handshake: %+v, max payload %d", c.info, c.maxPayload)
				}
			}
		case 1:
			h := &handshake{r: newReader(rw), w: rw}
			if h.start() == nil {
				h.list()
			}
		case 2:
			h := &handshake{r: newReader(rw), w: rw}
			if h.start() == nil {
				h.info(optInfo, "disk")
			}
		}
	})
}

// FuzzClientReplies feeds arbitrary bytes to the client's reply reader
// with a few requests pending: parsing simple replies and structured
// chunks must never panic, loop, or write outside a request's buffer.
func FuzzClientReplies(f *testing.F) {
	data := bytes.Repeat([]byte{0xab}, 128)
	f.Add(true, join(
		structChunk(0, replyOffsetData, 1, append(be.AppendUint64(nil, 4096), data...)),
		structChunk(replyFlagDone, replyOffsetHole, 1, be.AppendUint32(be.AppendUint64(nil, 4096+128), 128)),
		structChunk(replyFlagDone, replyBlockStatus, 2, join(be.AppendUint32(nil, 1), be.AppendUint32(nil, 65536), be.AppendUint32(nil, 3))),
		structChunk(replyFlagDone, replyError, 3, append(be.AppendUint16(be.AppendUint32(nil, 5), 4), "oops"...)),
	))
	f.Add(true, structChunk(replyFlagDone, replyErrorOffset, 1, be.AppendUint64(be.AppendUint16(be.AppendUint32(nil, 28), 0), 4100)))
	simple := be.AppendUint32(nil, magicSimpleReply)
	f.Add(false, join(simple, be.AppendUint32(nil, 0), be.AppendUint64(nil, 4), make([]byte, 64),
		simple, be.AppendUint32(nil, 5), be.AppendUint64(nil, 3)))
	f.Fuzz(func(t *testing.T, structured bool, data []byte) {
		c := &Client{r: bufio.NewReader(bytes.NewReader(data)), structured: structured,
			pending: map[uint64]*call{}, readerDone: make(chan struct{})}
		// The buffers sit inside guard bytes that must stay untouched.
		guard := func(n int) ([]byte, []byte) {
			b := bytes.Repeat([]byte{0x5c}, n+64)
			return b, b[32 : 32+n]
		}
		g1, buf1 := guard(256)
		g4, buf4 := guard(64)
		calls := []*call{
			{cookie: 1, cmd: cmdRead, off: 4096, length: 256, buf: buf1},
			{cookie: 2, cmd: cmdBlockStatus, off: 0, length: 1 << 20},
			{cookie: 3, cmd: cmdWrite, off: 0, length: 512},
			{cookie: 4, cmd: cmdRead, off: 0, length: 64, buf: buf4},
		}
		for _, cl := range calls {
			cl.done = make(chan struct{})
			c.pending[cl.cookie] = cl
			c.inflight.Add(1)
		}
		for i := 0; i < 1000; i++ {
			if err := c.readReply(); err != nil {
				break
			}
		}
		c.fail(io.EOF)
		for _, g := range [][]byte{g1, g4} {
			if !bytes.Equal(g[:32], bytes.Repeat([]byte{0x5c}, 32)) || !bytes.Equal(g[len(g)-32:], bytes.Repeat([]byte{0x5c}, 32)) {
				t.Fatal("reply data written outside the request's buffer")
			}
		}
		for _, cl := range calls {
			<-cl.done // every call completes
		}
	})
}

// pipeConn is a net.Conn that reads a fixed byte stream and discards
// what is written, to feed a server connection in a fuzz test.
type pipeConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	closed bool
}

func (p *pipeConn) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, net.ErrClosed
	}
	return p.r.Read(b)
}

func (p *pipeConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (p *pipeConn) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

func (p *pipeConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (p *pipeConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (p *pipeConn) SetDeadline(t time.Time) error      { return nil }
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzServerConn feeds an arbitrary client byte stream to a server
// connection over a real file backend: option and request parsing must
// never panic or hang.
func FuzzServerConn(f *testing.F) {
	flags := be.AppendUint32(nil, flagCFixedNewstyle|flagCNoZeroes)
	goDisk := clientOption(optGo, nameData("disk", []byte{0, 2, 0, infoBlockSize, 0, infoName}))
	f.Add(join(flags,
		clientOption(optStructuredReply, nil),
		clientOption(optSetMetaContext, metaQuery("disk", ContextBaseAllocation)),
		goDisk,
		clientRequest(cmdRead, 0, 1, 0, 4096, nil),
		clientRequest(cmdWrite, CmdFlagFUA, 2, 4096, 512, make([]byte, 512)),
		clientRequest(cmdBlockStatus, 0, 3, 0, 1<<20, nil),
		clientRequest(cmdTrim, 0, 4, 8192, 4096, nil),
		clientRequest(cmdWriteZeroes, CmdFlagNoHole, 5, 65536, 4096, nil),
		clientRequest(cmdRead, CmdFlagDF, 6, 0, 1<<20, nil),
		clientRequest(cmdFlush, 0, 7, 0, 0, nil),
		clientRequest(cmdDisc, 0, 8, 0, 0, nil)))
	f.Add(join(flags, clientOption(optList, nil), clientOption(optInfo, nameData("disk", []byte{0, 0})),
		clientOption(optListMetaContext, metaQuery("disk")), clientOption(99, []byte("x")), clientOption(optAbort, nil)))
	f.Add(join(be.AppendUint32(nil, flagCFixedNewstyle), clientOption(optExportName, []byte("disk")),
		clientRequest(cmdRead, 0, 1, 512, 512, nil), clientRequest(cmdWrite, 0, 2, 1<<20-512, 512, make([]byte, 512))))
	dir := f.TempDir()
	path := filepath.Join(dir, "fuzz.raw")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 1<<20), 0o600); err != nil {
		f.Fatal(err)
	}
	b, err := OpenFileBackend(path, false)
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	s, err := NewServer(Export{Name: "disk", Backend: b, MinBlockSize: 512, MaxBlockSize: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan error, 1)
		go func() { done <- s.ServeConn(context.Background(), &pipeConn{r: bytes.NewReader(data)}) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server connection did not end at the end of its input")
		}
	})
}
