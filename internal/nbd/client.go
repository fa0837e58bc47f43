package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Option configures a client connection.
type Option func(*config)

type config struct {
	metaContexts []string
	simple       bool
	stall        time.Duration
}

// DefaultStallTimeout is how long a client waits for a byte of a reply
// while requests are pending before it gives the connection up.
const DefaultStallTimeout = time.Minute

// WithStallTimeout fails the connection, and every request on it, once
// requests are pending and the server has sent nothing for d (a stalled
// export, a frozen server); an idle connection may stay silent. 0 means
// DefaultStallTimeout.
func WithStallTimeout(d time.Duration) Option {
	return func(c *config) { c.stall = d }
}

// WithMetaContexts asks the server for metadata contexts, such as
// ContextBaseAllocation or "qemu:dirty-bitmap:NAME". Contexts the server
// does not offer are left out; BlockStatus on them fails clearly.
func WithMetaContexts(names ...string) Option {
	return func(c *config) { c.metaContexts = append(c.metaContexts, names...) }
}

// WithSimpleReplies does not negotiate structured replies (and so no
// metadata contexts): every reply is a simple reply.
func WithSimpleReplies() Option {
	return func(c *config) { c.simple = true }
}

// Client is a connection to one NBD export in the transmission phase. Its
// methods are safe for concurrent use: many requests are in flight at once
// over the one connection, and a reader goroutine routes replies to them.
type Client struct {
	conn       net.Conn
	r          *bufio.Reader
	src        io.Reader // what r reads from: large payloads are read from it directly
	stall      *stallConn
	source     string
	info       ExportInfo
	structured bool
	contexts   map[string]uint32 // negotiated metadata contexts
	maxPayload int64             // largest READ/WRITE, a multiple of MinBlock
	maxOther   int64             // largest TRIM/WRITE_ZEROES/BLOCK_STATUS, ditto

	wmu sync.Mutex // serialises requests on the wire

	mu             sync.Mutex
	pending        map[uint64]*call
	cookie         uint64
	inflight       sync.WaitGroup
	closing        bool
	serverShutdown bool
	err            error // set once the connection broke
	readerDone     chan struct{}
}

// call is one request awaiting its reply.
type call struct {
	cookie uint64
	cmd    uint16
	off    uint64
	length uint32

	// bufMu guards buf against abandonment: the reader writes into buf
	// only while holding it, and an abandoned call's buf is never touched.
	bufMu     sync.Mutex
	buf       []byte
	abandoned bool
	// gone is set when the caller stopped waiting (its context ended):
	// Close does not wait for such a request's reply.
	gone atomic.Bool

	// Set by the reader before done is closed.
	got     uint64 // bytes of a READ covered by data and hole chunks
	err     error
	extents map[uint32][]Extent
	done    chan struct{}
}

// Dial connects to the export named by an NBD URI (see ParseURI) and
// negotiates structured replies and the requested metadata contexts.
func Dial(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	a, err := ParseURI(rawURL)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: connecting to %s: %w", rawURL, err)
	}
	c, err := dialConn(ctx, conn, a.Export, a.String(), opts)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// DialConn runs the handshake on conn for export and returns a client in
// the transmission phase. The client owns conn; it is closed on error.
func DialConn(ctx context.Context, conn net.Conn, export string, opts ...Option) (*Client, error) {
	return dialConn(ctx, conn, export, fmt.Sprintf("nbd export %q on %s", export, conn.RemoteAddr()), opts)
}

func dialConn(ctx context.Context, conn net.Conn, export, source string, opts []Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.stall <= 0 {
		cfg.stall = DefaultStallTimeout
	}
	sc := &stallConn{Conn: conn, timeout: cfg.stall}
	c, err := withDeadline(ctx, conn, func() (*Client, error) { return handshakeClient(sc, export, cfg) })
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd: connecting to %s: %w", source, err)
	}
	c.source = source
	c.stall, sc.c = sc, c
	go c.readLoop()
	return c, nil
}

// stallConn gives every read a deadline of timeout from its start while
// requests are pending, so that a server that stops answering fails them
// instead of hanging them forever; an idle connection reads with no
// deadline. The deadline is set under the client's mutex, as is the one
// start sets for a new request, so that neither undoes the other.
type stallConn struct {
	net.Conn
	timeout time.Duration
	c       *Client // nil during the handshake
}

func (s *stallConn) Read(p []byte) (int, error) {
	if c := s.c; c != nil {
		c.mu.Lock()
		s.arm(len(c.pending) > 0)
		c.mu.Unlock()
	}
	return s.Conn.Read(p)
}

// arm sets or clears the read deadline; the caller holds the client's mutex.
func (s *stallConn) arm(pending bool) {
	if pending {
		s.Conn.SetReadDeadline(time.Now().Add(s.timeout))
	} else {
		s.Conn.SetReadDeadline(time.Time{})
	}
}

// withDeadline runs f, making conn's I/O fail once ctx is done.
func withDeadline[T any](ctx context.Context, conn net.Conn, f func() (T, error)) (T, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	v, err := f()
	if !stop() {
		var zero T
		return zero, ctx.Err()
	}
	return v, err
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 256<<10) }

// handshakeClient negotiates up to the transmission phase.
func handshakeClient(conn io.ReadWriter, export string, cfg config) (*Client, error) {
	r := newReader(conn)
	h := &handshake{r: r, w: conn}
	if err := h.start(); err != nil {
		return nil, err
	}
	c := &Client{r: r, src: conn, contexts: map[string]uint32{}, pending: map[uint64]*call{}, readerDone: make(chan struct{})}
	if nc, ok := conn.(net.Conn); ok {
		c.conn = nc
	}
	if !cfg.simple {
		if err := h.structuredReplies(); err != nil {
			return nil, err
		}
	}
	var queries []string
	for _, q := range cfg.metaContexts {
		if !slices.Contains(queries, q) {
			queries = append(queries, q)
		}
	}
	if h.structured && len(queries) > 0 {
		m, err := h.metaContexts(optSetMetaContext, export, queries)
		if err != nil {
			return nil, err
		}
		c.contexts = m
	}
	info, err := h.info(optGo, export)
	var oe *OptionError
	if errors.As(err, &oe) && oe.Unsupported() {
		info, err = h.exportName(export)
	}
	if err != nil {
		return nil, err
	}
	c.info, c.structured = info, h.structured
	if c.info.MinBlock == 0 {
		c.info.MinBlock, c.info.PreferredBlock, c.info.MaxBlock = 1, 4096, DefaultMaxPayload
	}
	minB := int64(c.info.MinBlock)
	c.maxPayload = min(int64(c.info.MaxBlock), DefaultMaxPayload) / minB * minB
	c.maxOther = maxNonPayload / minB * minB
	return c, nil
}

// Info returns what the server announced about the export.
func (c *Client) Info() ExportInfo { return c.info }

// Size returns the export's size in bytes.
func (c *Client) Size() int64 { return c.info.Size }

// Flags returns the export's transmission flags.
func (c *Client) Flags() uint16 { return c.info.Flags }

// ReadOnly reports whether the server refuses writes to the export.
func (c *Client) ReadOnly() bool { return c.info.Flags&FlagReadOnly != 0 }

// Structured reports whether structured replies were negotiated.
func (c *Client) Structured() bool { return c.structured }

// MetaContexts returns the metadata contexts the server agreed to, sorted.
func (c *Client) MetaContexts() []string {
	var out []string
	for name := range c.contexts {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// HasMetaContext reports whether the metadata context was negotiated.
func (c *Client) HasMetaContext(name string) bool {
	_, ok := c.contexts[name]
	return ok
}

// ReadAt reads len(p) bytes at off (io.ReaderAt); reads past the end of
// the export are cut short with io.EOF. It can be stopped only by the
// stall timeout; ReadAtContext also stops when ctx ends.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt, returning ctx's error once ctx ends.
func (c *Client) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd read at negative offset %d", off)
	}
	if off >= c.info.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), c.info.Size-off))
	if err := c.Pread(ctx, p[:n], off, 0); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off (io.WriterAt).
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if err := c.Pwrite(context.Background(), p, off, 0); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Pread reads len(p) bytes at off, which must lie inside the export.
// Large reads are split into requests the server accepts and sent all at
// once; reads not aligned to the server's minimum block size read the
// aligned range around them. flags may hold CmdFlagDF.
func (c *Client) Pread(ctx context.Context, p []byte, off int64, flags CmdFlags) error {
	if err := c.checkRange("read", off, int64(len(p))); err != nil {
		return err
	}
	if flags&^CmdFlagDF != 0 {
		return fmt.Errorf("nbd read: flags %#x are not read flags", uint16(flags))
	}
	if flags&CmdFlagDF != 0 && c.info.Flags&FlagSendDF == 0 {
		return fmt.Errorf("nbd read: server does not support the DF flag")
	}
	if len(p) == 0 {
		return nil
	}
	minB := int64(c.info.MinBlock)
	if off%minB != 0 || int64(len(p))%minB != 0 {
		start := off / minB * minB
		end := min((off+int64(len(p))+minB-1)/minB*minB, c.info.Size)
		bounce := make([]byte, end-start)
		if err := c.pread(ctx, bounce, start, flags); err != nil {
			return err
		}
		copy(p, bounce[off-start:])
		return nil
	}
	return c.pread(ctx, p, off, flags)
}

func (c *Client) pread(ctx context.Context, p []byte, off int64, flags CmdFlags) error {
	calls := make([]*call, 0, (int64(len(p))+c.maxPayload-1)/c.maxPayload)
	var err error
	for done := int64(0); done < int64(len(p)); {
		n := min(int64(len(p))-done, c.maxPayload)
		var cl *call
		cl, err = c.start(ctx, cmdRead, flags, off+done, uint32(n), nil, p[done:done+n])
		if err != nil {
			break
		}
		calls = append(calls, cl)
		done += n
	}
	return c.waitAll(ctx, calls, err)
}

// Pwrite writes p at off, which must lie inside the export. flags may hold
// CmdFlagFUA. off and len(p) must be multiples of the minimum block size.
func (c *Client) Pwrite(ctx context.Context, p []byte, off int64, flags CmdFlags) error {
	if err := c.checkWrite("write", off, int64(len(p)), flags, CmdFlagFUA, 0); err != nil {
		return err
	}
	var calls []*call
	var err error
	for done := int64(0); done < int64(len(p)); {
		n := min(int64(len(p))-done, c.maxPayload)
		var cl *call
		cl, err = c.start(ctx, cmdWrite, flags, off+done, uint32(n), p[done:done+n], nil)
		if err != nil {
			break
		}
		calls = append(calls, cl)
		done += n
	}
	return c.waitAll(ctx, calls, err)
}

// WriteZeroes makes length bytes at off read as zeros. flags may hold
// CmdFlagFUA, CmdFlagNoHole (allocate rather than punch a hole) and
// CmdFlagFastZero.
func (c *Client) WriteZeroes(ctx context.Context, off, length int64, flags CmdFlags) error {
	if err := c.checkWrite("write-zeroes", off, length, flags, CmdFlagFUA|CmdFlagNoHole|CmdFlagFastZero, FlagSendWriteZeroes); err != nil {
		return err
	}
	if flags&CmdFlagFastZero != 0 && c.info.Flags&FlagSendFastZero == 0 {
		return fmt.Errorf("nbd write-zeroes: server does not support the FAST_ZERO flag: %w", errors.ErrUnsupported)
	}
	return c.ranged(ctx, cmdWriteZeroes, off, length, flags)
}

// Trim tells the server length bytes at off are no longer needed; they may
// read back as anything. flags may hold CmdFlagFUA.
func (c *Client) Trim(ctx context.Context, off, length int64, flags CmdFlags) error {
	if err := c.checkWrite("trim", off, length, flags, CmdFlagFUA, FlagSendTrim); err != nil {
		return err
	}
	return c.ranged(ctx, cmdTrim, off, length, flags)
}

func (c *Client) ranged(ctx context.Context, cmd uint16, off, length int64, flags CmdFlags) error {
	var calls []*call
	var err error
	for done := int64(0); done < length; {
		n := min(length-done, c.maxOther)
		var cl *call
		cl, err = c.start(ctx, cmd, flags, off+done, uint32(n), nil, nil)
		if err != nil {
			break
		}
		calls = append(calls, cl)
		done += n
	}
	return c.waitAll(ctx, calls, err)
}

// Flush makes every completed write durable. It does nothing on a server
// without a write cache (one that does not advertise flush).
func (c *Client) Flush(ctx context.Context) error {
	if c.info.Flags&FlagSendFlush == 0 {
		return nil
	}
	cl, err := c.start(ctx, cmdFlush, 0, 0, 0, nil, nil)
	if err != nil {
		return err
	}
	return c.waitAll(ctx, []*call{cl}, nil)
}

// BlockStatusOnce sends one BLOCK_STATUS request for up to length bytes at
// off and returns the extents of every negotiated context, by context
// name, as the server sent them: they start at off, may cover less than
// length, and the last may run past it. flags may hold CmdFlagReqOne.
func (c *Client) BlockStatusOnce(ctx context.Context, off, length int64, flags CmdFlags) (map[string][]Extent, error) {
	if err := c.checkRange("block-status", off, length); err != nil {
		return nil, err
	}
	if flags&^CmdFlagReqOne != 0 {
		return nil, fmt.Errorf("nbd block-status: flags %#x are not block status flags", uint16(flags))
	}
	if len(c.contexts) == 0 {
		return nil, fmt.Errorf("nbd block-status on %s: no metadata context was negotiated", c.source)
	}
	if length <= 0 {
		return nil, fmt.Errorf("nbd block-status on %s: empty range at offset %d", c.source, off)
	}
	minB := int64(c.info.MinBlock)
	start := off / minB * minB
	end := min(off+length, start+c.maxOther)
	end = min((end+minB-1)/minB*minB, c.info.Size)
	cl, err := c.start(ctx, cmdBlockStatus, flags, start, uint32(end-start), nil, nil)
	if err != nil {
		return nil, err
	}
	if err := c.waitAll(ctx, []*call{cl}, nil); err != nil {
		return nil, err
	}
	out := map[string][]Extent{}
	for name, id := range c.contexts {
		exts := cl.extents[id]
		// Drop what lies before off when the request was widened to align.
		for len(exts) > 0 && exts[0].Offset+exts[0].Length <= off {
			exts = exts[1:]
		}
		if len(exts) > 0 && exts[0].Offset < off {
			exts[0].Length -= off - exts[0].Offset
			exts[0].Offset = off
		}
		out[name] = exts
	}
	return out, nil
}

// BlockStatus returns the extents of [off, off+length) in one metadata
// context, asking as many times as it takes to cover the range; adjacent
// extents with the same flags are merged.
func (c *Client) BlockStatus(ctx context.Context, metaContext string, off, length int64) ([]Extent, error) {
	if !c.HasMetaContext(metaContext) {
		return nil, fmt.Errorf("nbd block-status on %s: metadata context %q was not negotiated (the server agreed to %q)",
			c.source, metaContext, c.MetaContexts())
	}
	if err := c.checkRange("block-status", off, length); err != nil {
		return nil, err
	}
	var out []Extent
	end := off + length
	for pos := off; pos < end; {
		m, err := c.BlockStatusOnce(ctx, pos, end-pos, 0)
		if err != nil {
			return nil, err
		}
		exts := m[metaContext]
		if len(exts) == 0 {
			return nil, fmt.Errorf("nbd block-status on %s: %w: no extent for %q at offset %d", c.source, ErrProtocol, metaContext, pos)
		}
		for _, e := range exts {
			if pos >= end {
				break
			}
			if e.Offset != pos {
				return nil, fmt.Errorf("nbd block-status on %s: %w: extent at %d, expected %d", c.source, ErrProtocol, e.Offset, pos)
			}
			e.Length = min(e.Length, end-pos)
			if n := len(out); n > 0 && out[n-1].Flags == e.Flags && out[n-1].Offset+out[n-1].Length == e.Offset {
				out[n-1].Length += e.Length
			} else {
				out = append(out, e)
			}
			pos += e.Length
		}
	}
	return out, nil
}

// Close waits briefly for requests in flight, sends NBD_CMD_DISC and
// closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.readerDone
		return nil
	}
	c.closing = true
	broken := c.err != nil
	awaited := false // a request someone still waits for
	for _, cl := range c.pending {
		awaited = awaited || !cl.gone.Load()
	}
	c.mu.Unlock()
	var err error
	if !broken {
		idle := make(chan struct{})
		go func() { c.inflight.Wait(); close(idle) }()
		wait := 10 * time.Second
		if !awaited {
			wait = 0 // only replies nobody waits for: a stalled server may never send them
		}
		select {
		case <-idle:
		case <-time.After(wait):
		}
		var hdr [requestHeaderSize]byte
		putRequest(hdr[:], cmdDisc, 0, 0, 0, 0)
		c.wmu.Lock()
		c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, werr := c.conn.Write(hdr[:]); werr != nil {
			err = fmt.Errorf("nbd: disconnecting from %s: %w", c.source, werr)
		}
		c.wmu.Unlock()
	}
	// The reader closes the connection too once the server hangs up.
	if cerr := c.conn.Close(); cerr != nil && err == nil && !broken && !errors.Is(cerr, net.ErrClosed) {
		err = fmt.Errorf("nbd: closing connection to %s: %w", c.source, cerr)
	}
	<-c.readerDone
	return err
}

func (c *Client) checkRange(op string, off, length int64) error {
	if off < 0 || length < 0 || off > c.info.Size || length > c.info.Size-off {
		return fmt.Errorf("nbd %s of %d bytes at offset %d: outside the export's %d bytes", op, length, off, c.info.Size)
	}
	return nil
}

func (c *Client) checkWrite(op string, off, length int64, flags, allowed CmdFlags, needFlag uint16) error {
	if err := c.checkRange(op, off, length); err != nil {
		return err
	}
	if c.ReadOnly() {
		return fmt.Errorf("nbd %s on %s: export is read-only: %w", op, c.source, syscall.EROFS)
	}
	if needFlag != 0 && c.info.Flags&needFlag == 0 {
		return fmt.Errorf("nbd %s on %s: server does not support it: %w", op, c.source, errors.ErrUnsupported)
	}
	if flags&^allowed != 0 {
		return fmt.Errorf("nbd %s: flags %#x are not allowed", op, uint16(flags))
	}
	if flags&CmdFlagFUA != 0 && c.info.Flags&FlagSendFUA == 0 {
		return fmt.Errorf("nbd %s on %s: server does not support FUA: %w", op, c.source, errors.ErrUnsupported)
	}
	minB := int64(c.info.MinBlock)
	if off%minB != 0 || (length%minB != 0 && off+length != c.info.Size) {
		return fmt.Errorf("nbd %s of %d bytes at offset %d: not aligned to the server's %d-byte minimum block size", op, length, off, minB)
	}
	return nil
}

// start registers a request and sends it.
func (c *Client) start(ctx context.Context, cmd uint16, flags CmdFlags, off int64, length uint32, payload, buf []byte) (*call, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cl := &call{cmd: cmd, off: uint64(off), length: length, buf: buf, done: make(chan struct{})}
	c.mu.Lock()
	switch {
	case c.err != nil:
		c.mu.Unlock()
		return nil, c.err
	case c.closing:
		c.mu.Unlock()
		return nil, ErrClosed
	case c.serverShutdown:
		c.mu.Unlock()
		return nil, fmt.Errorf("nbd %s: server %s is shutting down: %w", commandName(cmd), c.source, syscall.ESHUTDOWN)
	}
	c.cookie++
	cl.cookie = c.cookie
	c.pending[cl.cookie] = cl
	c.inflight.Add(1)
	if c.stall != nil {
		c.stall.arm(true) // the reader may be waiting with no deadline
	}
	c.mu.Unlock()

	var hdr [requestHeaderSize]byte
	putRequest(hdr[:], cmd, flags, cl.cookie, uint64(off), length)
	c.wmu.Lock()
	var n int64
	var err error
	if len(payload) == 0 {
		// A bare header goes out whole at once; a server that stops
		// reading altogether is caught by the stall timeout. No deadline:
		// a cancellation must not cut a request in two and break the
		// stream for everyone.
		n, err = (&net.Buffers{hdr[:]}).WriteTo(c.conn)
	} else {
		// A done context interrupts a payload stuck on a server that does
		// not read; only the write side gets the deadline, replies keep
		// flowing.
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)); close(fired) })
		bufs := net.Buffers{hdr[:], payload}
		n, err = bufs.WriteTo(c.conn)
		if !stop() {
			<-fired
			c.conn.SetWriteDeadline(time.Time{})
		}
	}
	c.wmu.Unlock()
	if err != nil && n == 0 && ctx.Err() != nil {
		// Cancelled before a byte was sent: the stream is intact, the
		// request is withdrawn and the connection stays usable.
		c.mu.Lock()
		if _, ok := c.pending[cl.cookie]; ok {
			delete(c.pending, cl.cookie)
			c.inflight.Done()
			if c.stall != nil {
				c.stall.arm(len(c.pending) > 0)
			}
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("nbd %s of %d bytes at offset %d on %s: %w", commandName(cmd), length, off, c.source, ctx.Err())
	}
	if err != nil {
		// A request cut short leaves the stream unusable.
		c.fail(fmt.Errorf("sending %s request: %w", commandName(cmd), err))
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("%w (the request was cut short: %v)", cerr, err)
		}
		return nil, fmt.Errorf("nbd %s of %d bytes at offset %d on %s: %w", commandName(cmd), length, off, c.source, err)
	}
	return cl, nil
}

func putRequest(b []byte, cmd uint16, flags CmdFlags, cookie, off uint64, length uint32) {
	be.PutUint32(b[0:], magicRequest)
	be.PutUint16(b[4:], uint16(flags))
	be.PutUint16(b[6:], cmd)
	be.PutUint64(b[8:], cookie)
	be.PutUint64(b[16:], off)
	be.PutUint32(b[24:], length)
}

// waitAll waits for calls and returns the first error (startErr first).
// If it returns early, every call still in flight is abandoned, so none
// writes into the caller's buffer afterwards.
func (c *Client) waitAll(ctx context.Context, calls []*call, startErr error) error {
	err := startErr
	for i, cl := range calls {
		if err == nil {
			select {
			case <-cl.done:
				err = cl.err
				continue
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		for _, rest := range calls[i:] {
			c.abandon(rest)
		}
		break
	}
	return err
}

// abandon makes sure the reader never touches cl's buffer again.
func (c *Client) abandon(cl *call) {
	cl.gone.Store(true)
	if cl.buf == nil {
		return
	}
	if !cl.bufMu.TryLock() {
		// The reader is filling the buffer right now; give it a moment,
		// then give up on a server that stalls mid-reply.
		t := time.AfterFunc(2*time.Second, func() { c.conn.Close() })
		cl.bufMu.Lock()
		t.Stop()
	}
	cl.abandoned = true
	cl.bufMu.Unlock()
}

// fail breaks the connection: every pending request fails with err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		if c.closing {
			c.err = ErrClosed
		} else {
			c.err = fmt.Errorf("nbd: connection to %s broken: %w", c.source, err)
		}
	}
	for cookie, cl := range c.pending {
		delete(c.pending, cookie)
		cl.err = c.err
		close(cl.done)
		c.inflight.Done()
	}
	c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
}

func (c *Client) readLoop() {
	defer close(c.readerDone)
	for {
		if err := c.readReply(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("no reply for %s with requests pending (stall timeout): %w", c.stall.timeout, err)
			}
			c.fail(err)
			return
		}
	}
}

func (c *Client) lookup(cookie uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

func (c *Client) finish(cl *call) {
	if cl.err != nil && errors.Is(cl.err, syscall.ESHUTDOWN) {
		c.mu.Lock()
		c.serverShutdown = true
		c.mu.Unlock()
	}
	c.mu.Lock()
	delete(c.pending, cl.cookie)
	close(cl.done)
	c.inflight.Done()
	c.mu.Unlock()
}

func (c *Client) serverError(cl *call, errno uint32, msg string, errOff int64) error {
	return &Error{Op: commandName(cl.cmd), Offset: int64(cl.off), Length: int64(cl.length),
		Errno: syscall.Errno(errno), Message: msg, ErrorOffset: errOff}
}

// readReply reads one simple reply or one structured reply chunk and
// applies it to its request. Any error is fatal to the connection.
func (c *Client) readReply() error {
	var hdr [structReplyHeaderSize]byte
	if _, err := io.ReadFull(c.r, hdr[:4]); err != nil {
		return fmt.Errorf("reading reply: %w", err)
	}
	switch m := be.Uint32(hdr[:]); m {
	case magicSimpleReply:
		if _, err := io.ReadFull(c.r, hdr[4:simpleReplyHeaderSize]); err != nil {
			return fmt.Errorf("reading reply: %w", err)
		}
		errno, cookie := be.Uint32(hdr[4:]), be.Uint64(hdr[8:])
		cl := c.lookup(cookie)
		if cl == nil {
			return protoErr("simple reply for unknown request %#x", cookie)
		}
		if cl.cmd == cmdRead && c.structured {
			return protoErr("simple reply to a read after structured replies were negotiated")
		}
		if errno != 0 {
			cl.err = c.serverError(cl, errno, "", -1)
		} else if cl.cmd == cmdRead {
			if err := c.readInto(cl, 0, int64(cl.length)); err != nil {
				return err
			}
		}
		c.finish(cl)
		return nil
	case magicStructReply:
		if !c.structured {
			return protoErr("structured reply without structured replies negotiated")
		}
		if _, err := io.ReadFull(c.r, hdr[4:]); err != nil {
			return fmt.Errorf("reading reply: %w", err)
		}
		flags, typ := be.Uint16(hdr[4:]), be.Uint16(hdr[6:])
		cookie, length := be.Uint64(hdr[8:]), be.Uint32(hdr[16:])
		cl := c.lookup(cookie)
		if cl == nil {
			return protoErr("structured reply chunk for unknown request %#x", cookie)
		}
		if err := c.readChunk(cl, typ, length); err != nil {
			return err
		}
		if flags&replyFlagDone != 0 {
			c.finishStructured(cl)
		} else if typ == replyNone {
			return protoErr("NBD_REPLY_TYPE_NONE without the DONE flag")
		}
		return nil
	case magicExtendedReply:
		return protoErr("extended reply header, but extended headers were not negotiated")
	default:
		return protoErr("reply magic %#x", m)
	}
}

// readInto reads n bytes of READ data for the region starting rel bytes
// into cl's request, straight into the caller's buffer unless the call
// was abandoned.
func (c *Client) readInto(cl *call, rel, n int64) error {
	const slice = 1 << 20 // release bufMu regularly so abandon is quick
	for n > 0 {
		k := min(n, slice)
		cl.bufMu.Lock()
		var err error
		if cl.abandoned {
			_, err = io.CopyN(io.Discard, c.r, k)
		} else {
			err = c.readPayload(cl.buf[rel : rel+k])
		}
		cl.bufMu.Unlock()
		if err != nil {
			return fmt.Errorf("reading read reply data: %w", err)
		}
		rel, n = rel+k, n-k
	}
	return nil
}

// readPayload fills p with reply data: first what the buffer holds, then,
// for a large read, straight from the connection, so that a disk's data
// is not copied through the buffer on its way.
func (c *Client) readPayload(p []byte) error {
	if n := min(c.r.Buffered(), len(p)); n > 0 {
		c.r.Read(p[:n]) // buffered: cannot fail
		p = p[n:]
	}
	if len(p) == 0 {
		return nil
	}
	if len(p) < 64<<10 || c.src == nil {
		_, err := io.ReadFull(c.r, p)
		return err
	}
	_, err := io.ReadFull(c.src, p)
	return err
}

// maxChunk bounds the payload of non-data chunks.
const maxChunk = 16 << 20

func (c *Client) readChunk(cl *call, typ uint16, length uint32) error {
	reqEnd := cl.off + uint64(cl.length)
	switch typ {
	case replyOffsetData:
		if cl.cmd != cmdRead {
			return protoErr("data chunk in reply to %s", commandName(cl.cmd))
		}
		if length < 8 {
			return protoErr("data chunk of %d bytes", length)
		}
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return fmt.Errorf("reading data chunk: %w", err)
		}
		off, n := be.Uint64(b[:]), uint64(length-8)
		if off < cl.off || off > reqEnd || n > reqEnd-off {
			return protoErr("data chunk [%d, +%d) outside request [%d, +%d)", off, n, cl.off, cl.length)
		}
		if err := c.readInto(cl, int64(off-cl.off), int64(n)); err != nil {
			return err
		}
		cl.got += n
		return nil
	case replyOffsetHole:
		if cl.cmd != cmdRead {
			return protoErr("hole chunk in reply to %s", commandName(cl.cmd))
		}
		if length != 12 {
			return protoErr("hole chunk of %d bytes", length)
		}
		var b [12]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return fmt.Errorf("reading hole chunk: %w", err)
		}
		off, n := be.Uint64(b[:]), uint64(be.Uint32(b[8:]))
		if n == 0 || off < cl.off || off > reqEnd || n > reqEnd-off {
			return protoErr("hole chunk [%d, +%d) outside request [%d, +%d)", off, n, cl.off, cl.length)
		}
		cl.bufMu.Lock()
		if !cl.abandoned {
			clear(cl.buf[off-cl.off : off-cl.off+n])
		}
		cl.bufMu.Unlock()
		cl.got += n
		return nil
	case replyNone:
		if length != 0 {
			return protoErr("NONE chunk with %d bytes of payload", length)
		}
		return nil
	}
	if length > maxChunk {
		return protoErr("chunk type %d of %d bytes", typ, length)
	}
	// Grow the buffer as bytes arrive rather than trusting the length.
	payload, err := io.ReadAll(io.LimitReader(c.r, int64(length)))
	if err == nil && len(payload) < int(length) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("reading reply chunk: %w", err)
	}
	return c.applyChunk(cl, typ, payload)
}

// applyChunk applies a block status or error chunk to its request.
func (c *Client) applyChunk(cl *call, typ uint16, p []byte) error {
	switch {
	case typ == replyBlockStatus:
		if cl.cmd != cmdBlockStatus {
			return protoErr("block status chunk in reply to %s", commandName(cl.cmd))
		}
		if len(p) < 12 || (len(p)-4)%8 != 0 {
			return protoErr("block status chunk of %d bytes", len(p))
		}
		id := be.Uint32(p)
		if cl.extents == nil {
			cl.extents = map[uint32][]Extent{}
		}
		if _, dup := cl.extents[id]; dup {
			return protoErr("two block status chunks for context %d", id)
		}
		exts := make([]Extent, 0, (len(p)-4)/8)
		pos := int64(cl.off)
		for b := p[4:]; len(b) >= 8; b = b[8:] {
			n := int64(be.Uint32(b))
			if n == 0 {
				return protoErr("block status extent of length 0")
			}
			exts = append(exts, Extent{Offset: pos, Length: n, Flags: be.Uint32(b[4:])})
			pos += n
		}
		cl.extents[id] = exts
		return nil
	case typ&replyErrBit != 0:
		if len(p) < 6 {
			return protoErr("error chunk of %d bytes", len(p))
		}
		errno, mlen := be.Uint32(p), int(be.Uint16(p[4:]))
		if 6+mlen > len(p) {
			return protoErr("error chunk message of %d bytes in %d", mlen, len(p))
		}
		if errno == 0 {
			return protoErr("error chunk with error 0")
		}
		msg, errOff := printable(p[6:6+mlen]), int64(-1)
		if typ == replyErrorOffset {
			if len(p) != 6+mlen+8 {
				return protoErr("error offset chunk of %d bytes", len(p))
			}
			o := be.Uint64(p[6+mlen:])
			if o < cl.off || o >= cl.off+uint64(cl.length) {
				return protoErr("error offset %d outside request [%d, +%d)", o, cl.off, cl.length)
			}
			errOff = int64(o)
		}
		if cl.err == nil {
			cl.err = c.serverError(cl, errno, msg, errOff)
		}
		return nil
	default:
		return protoErr("unknown reply chunk type %d", typ)
	}
}

func (c *Client) finishStructured(cl *call) {
	if cl.err == nil {
		switch cl.cmd {
		case cmdRead:
			if cl.got != uint64(cl.length) {
				cl.err = fmt.Errorf("nbd read of %d bytes at offset %d: %w: reply covered %d bytes",
					cl.length, cl.off, ErrProtocol, cl.got)
			}
		case cmdBlockStatus:
			if len(cl.extents) == 0 {
				cl.err = fmt.Errorf("nbd block-status at offset %d: %w: reply without extents", cl.off, ErrProtocol)
			}
		}
	}
	c.finish(cl)
}
