package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// serverConn is one client connection of a Server.
type serverConn struct {
	s    *Server
	conn net.Conn
	r    *bufio.Reader

	wmu sync.Mutex // serialises replies
	w   *bufio.Writer

	draining atomic.Bool

	// Negotiated in the handshake.
	noZeroes   bool
	structured bool
	metaExport string            // export the selected contexts belong to
	meta       map[uint32]string // selected metadata contexts by id
	exp        *Export
	flags      uint16

	handlers sync.WaitGroup
	sem      chan struct{}
}

func newServerConn(s *Server, conn net.Conn) *serverConn {
	n := s.MaxInFlight
	if n <= 0 {
		n = 16
	}
	return &serverConn{s: s, conn: conn, r: bufio.NewReaderSize(conn, 64<<10),
		w: bufio.NewWriterSize(conn, 64<<10), sem: make(chan struct{}, n)}
}

// drain makes the connection stop reading: requests in flight finish,
// their replies are sent, then the connection closes.
func (sc *serverConn) drain() {
	sc.draining.Store(true)
	sc.conn.SetReadDeadline(time.Unix(1, 0))
}

// serve runs the handshake and the transmission phase, then closes the
// connection. Errors are protocol violations and I/O failures; a clean
// disconnect (NBD_CMD_DISC, NBD_OPT_ABORT, shutdown) returns nil.
func (sc *serverConn) serve() error {
	defer sc.s.untrack(sc)
	defer sc.conn.Close()
	ok, err := sc.handshake()
	if err == nil && ok {
		err = sc.transmit()
		sc.handlers.Wait()
	}
	// A client that hangs up between messages, or a shutdown that stopped
	// the reading, is no error.
	if sc.draining.Load() || errors.Is(err, errAbort) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// handshake runs the option phase. It returns true when the client
// entered the transmission phase, false when it went away politely.
func (sc *serverConn) handshake() (bool, error) {
	var b [18]byte
	be.PutUint64(b[0:], magicInit)
	be.PutUint64(b[8:], magicOption)
	be.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	sc.w.Write(b[:])
	if err := sc.w.Flush(); err != nil {
		return false, fmt.Errorf("sending greeting: %w", err)
	}
	if _, err := io.ReadFull(sc.r, b[:4]); err != nil {
		return false, fmt.Errorf("reading client flags: %w", err)
	}
	cflags := be.Uint32(b[:])
	if cflags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return false, protoErr("unknown client flags %#x", cflags)
	}
	sc.noZeroes = cflags&flagCNoZeroes != 0
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(sc.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil // client went away during the handshake
			}
			return false, fmt.Errorf("reading option: %w", err)
		}
		if m := be.Uint64(hdr[:]); m != magicOption {
			return false, protoErr("option magic %#x", m)
		}
		opt, n := be.Uint32(hdr[8:]), be.Uint32(hdr[12:])
		if n > maxOptionLen {
			return false, protoErr("%s with %d bytes of data (limit %d)", optionName(opt), n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(sc.r, data); err != nil {
			return false, fmt.Errorf("reading %s: %w", optionName(opt), err)
		}
		if sc.draining.Load() {
			sc.reply(opt, repErrShutdown, []byte("server is shutting down"))
			return false, nil
		}
		done, err := sc.option(opt, data)
		if err != nil || done {
			return done, err
		}
	}
}

// option handles one option. done is true once in transmission phase.
func (sc *serverConn) option(opt uint32, data []byte) (done bool, err error) {
	switch opt {
	case optExportName:
		e := sc.s.export(string(data))
		if e == nil {
			// This option cannot fail politely: hang up, as the spec says.
			return false, fmt.Errorf("client asked for unknown export %q with NBD_OPT_EXPORT_NAME", printable(data))
		}
		sc.enter(e, string(data))
		b := make([]byte, 10, 134)
		be.PutUint64(b, uint64(e.Backend.Size()))
		be.PutUint16(b[8:], sc.flags)
		if !sc.noZeroes {
			b = b[:134]
		}
		sc.w.Write(b)
		if err := sc.w.Flush(); err != nil {
			return false, fmt.Errorf("ending handshake: %w", err)
		}
		return true, nil
	case optAbort:
		sc.reply(opt, repAck, nil)
		return false, errAbort
	case optList:
		if len(data) != 0 {
			return false, sc.reply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, e := range sc.s.exportList() {
			b := be.AppendUint32(nil, uint32(len(e.Name)))
			b = append(append(b, e.Name...), e.Description...)
			if err := sc.reply(opt, repServer, b); err != nil {
				return false, err
			}
		}
		return false, sc.reply(opt, repAck, nil)
	case optStructuredReply:
		if len(data) != 0 {
			return false, sc.reply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		if sc.structured {
			return false, sc.reply(opt, repErrInvalid, []byte("structured replies already negotiated"))
		}
		sc.structured = true
		return false, sc.reply(opt, repAck, nil)
	case optInfo, optGo:
		return sc.optInfo(opt, data)
	case optListMetaContext, optSetMetaContext:
		return false, sc.optMeta(opt, data)
	case optStartTLS:
		return false, sc.reply(opt, repErrUnsup, []byte("TLS is not supported by this server"))
	default:
		return false, sc.reply(opt, repErrUnsup, []byte(optionName(opt)+" is not supported"))
	}
}

// errAbort ends the handshake at the client's request.
var errAbort = errors.New("client aborted the handshake")

// enter picks the export for the transmission phase.
func (sc *serverConn) enter(e *Export, name string) {
	sc.exp = e
	if sc.metaExport != name {
		sc.meta = nil // contexts were selected for another export
	}
	sc.flags = exportFlags(e, sc.structured)
}

// exportFlags are the transmission flags of e.
func exportFlags(e *Export, structured bool) uint16 {
	flags := FlagHasFlags | FlagSendFlush
	if e.ReadOnly {
		flags |= FlagReadOnly
	} else {
		flags |= FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
	}
	if structured {
		flags |= FlagSendDF
	}
	if e.MultiConn {
		flags |= FlagCanMultiConn
	}
	return flags
}

func (sc *serverConn) optInfo(opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, sc.reply(opt, repErrInvalid, []byte("option data too short"))
	}
	nl := uint64(be.Uint32(data))
	if nl > maxStringLen || 4+nl+2 > uint64(len(data)) {
		return false, sc.reply(opt, repErrInvalid, []byte("bad export name length"))
	}
	name := string(data[4 : 4+nl])
	rest := data[4+nl:]
	nr := int(be.Uint16(rest))
	if len(rest) != 2+2*nr {
		return false, sc.reply(opt, repErrInvalid, []byte("bad information request count"))
	}
	e := sc.s.export(name)
	if e == nil {
		return false, sc.reply(opt, repErrUnknown, []byte(fmt.Sprintf("export %q not found", printable([]byte(name)))))
	}
	flags := exportFlags(e, sc.structured)
	b := be.AppendUint16(nil, infoExport)
	b = be.AppendUint64(b, uint64(e.Backend.Size()))
	b = be.AppendUint16(b, flags)
	if err := sc.reply(opt, repInfo, b); err != nil {
		return false, err
	}
	sentName, sentDesc := false, false
	for i := 0; i < nr; i++ {
		switch be.Uint16(rest[2+2*i:]) {
		case infoName:
			if !sentName {
				sentName = true
				if err := sc.reply(opt, repInfo, append(be.AppendUint16(nil, infoName), e.Name...)); err != nil {
					return false, err
				}
			}
		case infoDescription:
			if !sentDesc && e.Description != "" {
				sentDesc = true
				if err := sc.reply(opt, repInfo, append(be.AppendUint16(nil, infoDescription), e.Description...)); err != nil {
					return false, err
				}
			}
		}
	}
	// Block sizes go out whether asked for or not: a client that did not
	// ask still gets requests it sends within them served.
	b = be.AppendUint16(nil, infoBlockSize)
	b = be.AppendUint32(b, e.MinBlockSize)
	b = be.AppendUint32(b, e.PreferredBlockSize)
	b = be.AppendUint32(b, e.MaxBlockSize)
	if err := sc.reply(opt, repInfo, b); err != nil {
		return false, err
	}
	if err := sc.reply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt == optGo {
		sc.enter(e, name)
		return true, nil
	}
	return false, nil
}

func (sc *serverConn) optMeta(opt uint32, data []byte) error {
	if !sc.structured {
		return sc.reply(opt, repErrInvalid, []byte("structured replies must be negotiated first"))
	}
	bad := func(what string) error { return sc.reply(opt, repErrInvalid, []byte(what)) }
	if len(data) < 8 {
		return bad("option data too short")
	}
	nl := uint64(be.Uint32(data))
	if nl > maxStringLen || 4+nl+4 > uint64(len(data)) {
		return bad("bad export name length")
	}
	name := string(data[4 : 4+nl])
	rest := data[4+nl:]
	nq := be.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < nq; i++ {
		if len(rest) < 4 {
			return bad("query list shorter than its count")
		}
		ql := uint64(be.Uint32(rest))
		if ql > maxStringLen || 4+ql > uint64(len(rest)) {
			return bad("bad query length")
		}
		queries = append(queries, string(rest[4:4+ql]))
		rest = rest[4+ql:]
	}
	if len(rest) != 0 {
		return bad("trailing bytes after the queries")
	}
	if sc.s.export(name) == nil {
		return sc.reply(opt, repErrUnknown, []byte(fmt.Sprintf("export %q not found", printable([]byte(name)))))
	}
	// We offer one context: base:allocation.
	match := len(queries) == 0 && opt == optListMetaContext
	for _, q := range queries {
		if q == ContextBaseAllocation || (opt == optListMetaContext && q == "base:") {
			match = true
		}
	}
	if opt == optSetMetaContext {
		sc.meta, sc.metaExport = map[uint32]string{}, name
		if match {
			sc.meta[1] = ContextBaseAllocation
		}
	}
	if match {
		id := uint32(0) // ids of listed contexts are reserved
		if opt == optSetMetaContext {
			id = 1
		}
		if err := sc.reply(opt, repMetaContext, append(be.AppendUint32(nil, id), ContextBaseAllocation...)); err != nil {
			return err
		}
	}
	return sc.reply(opt, repAck, nil)
}

// reply sends one option reply.
func (sc *serverConn) reply(opt, typ uint32, data []byte) error {
	var hdr [20]byte
	be.PutUint64(hdr[0:], magicOptionReply)
	be.PutUint32(hdr[8:], opt)
	be.PutUint32(hdr[12:], typ)
	be.PutUint32(hdr[16:], uint32(len(data)))
	sc.w.Write(hdr[:])
	sc.w.Write(data)
	if err := sc.w.Flush(); err != nil {
		return fmt.Errorf("sending reply to %s: %w", optionName(opt), err)
	}
	return nil
}

// request is one transmission request.
type request struct {
	flags  CmdFlags
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
	data   []byte // WRITE payload
}

// transmit reads requests and hands each to a goroutine. It returns on
// NBD_CMD_DISC (nil), at end of input or on a protocol violation.
func (sc *serverConn) transmit() error {
	maxPayload := sc.exp.MaxBlockSize
	for {
		var hdr [requestHeaderSize]byte
		if _, err := io.ReadFull(sc.r, hdr[:]); err != nil {
			return fmt.Errorf("reading request: %w", err)
		}
		if m := be.Uint32(hdr[:]); m != magicRequest {
			return protoErr("request magic %#x", m)
		}
		req := request{flags: CmdFlags(be.Uint16(hdr[4:])), typ: be.Uint16(hdr[6:]),
			cookie: be.Uint64(hdr[8:]), off: be.Uint64(hdr[16:]), length: be.Uint32(hdr[24:])}
		switch req.typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			if req.length > maxPayload {
				// The payload cannot be trusted to be there: hang up.
				return protoErr("write of %d bytes, above the %d-byte maximum", req.length, maxPayload)
			}
			req.data = make([]byte, req.length)
			if _, err := io.ReadFull(sc.r, req.data); err != nil {
				return fmt.Errorf("reading write payload: %w", err)
			}
		}
		sc.sem <- struct{}{}
		sc.handlers.Add(1)
		go func() {
			defer func() { <-sc.sem; sc.handlers.Done() }()
			if err := sc.handle(req); err != nil {
				// Replies cannot be sent: end the connection.
				sc.conn.Close()
			}
		}()
	}
}

// failure is an error reply.
type failure struct {
	errno syscall.Errno
	msg   string
}

func fail(errno syscall.Errno, format string, args ...any) *failure {
	return &failure{errno: errno, msg: fmt.Sprintf(format, args...)}
}

func backendFailure(what string, err error) *failure {
	return &failure{errno: wireErrno(err), msg: fmt.Sprintf("%s: %v", what, err)}
}

// check validates a request against the export.
func (sc *serverConn) check(req *request) *failure {
	e := sc.exp
	var allowed CmdFlags
	switch req.typ {
	case cmdRead:
		if sc.structured {
			allowed = CmdFlagDF
		}
	case cmdWrite, cmdTrim:
		allowed = CmdFlagFUA
	case cmdWriteZeroes:
		allowed = CmdFlagFUA | CmdFlagNoHole
	case cmdBlockStatus:
		allowed = CmdFlagReqOne
	case cmdFlush:
		return nil
	default:
		return fail(errInval, "%s is not supported", commandName(req.typ))
	}
	if req.flags&^allowed != 0 {
		return fail(errInval, "flags %#x are not valid for %s", uint16(req.flags), commandName(req.typ))
	}
	size := uint64(e.Backend.Size())
	if req.off > size || uint64(req.length) > size-req.off {
		return fail(errInval, "%s of %d bytes at offset %d is outside the %d-byte export", commandName(req.typ), req.length, req.off, size)
	}
	if minB := uint64(e.MinBlockSize); req.off%minB != 0 || (uint64(req.length)%minB != 0 && req.off+uint64(req.length) != size) {
		return fail(errInval, "%s of %d bytes at offset %d is not aligned to %d bytes", commandName(req.typ), req.length, req.off, minB)
	}
	if req.typ == cmdRead && req.length > e.MaxBlockSize {
		return fail(errOverflow, "read of %d bytes is above the %d-byte maximum", req.length, e.MaxBlockSize)
	}
	if e.ReadOnly && (req.typ == cmdWrite || req.typ == cmdTrim || req.typ == cmdWriteZeroes) {
		return fail(errPerm, "export is read-only")
	}
	if req.typ == cmdBlockStatus {
		if !sc.structured || len(sc.meta) == 0 {
			return fail(errInval, "no metadata context was negotiated")
		}
		if req.length == 0 {
			return fail(errInval, "block status of 0 bytes")
		}
	}
	return nil
}

// handle serves one request and sends its reply. Its error means the
// reply could not be sent.
func (sc *serverConn) handle(req request) error {
	ctx := sc.s.ctx
	if f := sc.check(&req); f != nil {
		return sc.sendError(req, f)
	}
	b := sc.exp.Backend
	off, n := int64(req.off), int64(req.length)
	var f *failure
	switch req.typ {
	case cmdRead:
		return sc.read(ctx, req)
	case cmdBlockStatus:
		return sc.blockStatus(ctx, req)
	case cmdWrite:
		if _, err := b.WriteAt(req.data, off); err != nil {
			f = backendFailure("write", err)
		}
	case cmdTrim:
		if err := b.Trim(ctx, off, n); err != nil {
			f = backendFailure("trim", err)
		}
	case cmdWriteZeroes:
		if err := b.WriteZeroes(ctx, off, n, req.flags&CmdFlagNoHole != 0); err != nil {
			f = backendFailure("write zeroes", err)
		}
	case cmdFlush:
		if err := b.Flush(ctx); err != nil {
			f = backendFailure("flush", err)
		}
	}
	if f == nil && req.flags&CmdFlagFUA != 0 {
		if err := b.Flush(ctx); err != nil {
			f = backendFailure("flush for FUA", err)
		}
	}
	if f != nil {
		return sc.sendError(req, f)
	}
	return sc.send(func(w *bufio.Writer) {
		if sc.structured {
			putChunk(w, replyFlagDone, replyNone, req.cookie, 0)
		} else {
			putSimple(w, 0, req.cookie)
		}
	})
}

// read serves a READ. With structured replies and a backend that knows
// its holes, holes go out as hole chunks without being read.
func (sc *serverConn) read(ctx context.Context, req request) error {
	b := sc.exp.Backend
	off, n := int64(req.off), int64(req.length)
	exts := []Extent{{Offset: off, Length: n}}
	if ab, ok := b.(AllocationBackend); ok && sc.structured && req.flags&CmdFlagDF == 0 && n > 0 {
		got, err := ab.BlockStatus(ctx, off, n)
		if err == nil {
			exts = clipExtents(got, off, n, false)
		}
	}
	if sr, ok := b.(SliceReader); ok {
		return sc.readSlices(ctx, req, sr, exts)
	}
	buf := make([]byte, n)
	for _, e := range exts {
		if sc.structured && e.Flags&StateZero != 0 {
			continue
		}
		k, err := b.ReadAt(buf[e.Offset-off:e.Offset-off+e.Length], e.Offset)
		if int64(k) < e.Length {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			f := backendFailure("read", err)
			if sc.structured {
				return sc.send(func(w *bufio.Writer) { putErrorChunk(w, req.cookie, f, e.Offset+int64(k)) })
			}
			return sc.sendError(req, f)
		}
	}
	return sc.send(func(w *bufio.Writer) {
		if !sc.structured {
			putSimple(w, 0, req.cookie)
			w.Write(buf)
			return
		}
		if n == 0 {
			putChunk(w, replyFlagDone, replyNone, req.cookie, 0)
			return
		}
		for i, e := range exts {
			var flags uint16
			if i == len(exts)-1 {
				flags = replyFlagDone
			}
			if e.Flags&StateZero != 0 {
				putChunk(w, flags, replyOffsetHole, req.cookie, 12)
				var p [12]byte
				be.PutUint64(p[:], uint64(e.Offset))
				be.PutUint32(p[8:], uint32(e.Length))
				w.Write(p[:])
				continue
			}
			putChunk(w, flags, replyOffsetData, req.cookie, uint32(8+e.Length))
			var p [8]byte
			be.PutUint64(p[:], uint64(e.Offset))
			w.Write(p[:])
			w.Write(buf[e.Offset-off : e.Offset-off+e.Length])
		}
	})
}

// readSlices serves a READ from a SliceReader: the reply goes out with
// one writev of its headers and the backend's own slices.
func (sc *serverConn) readSlices(ctx context.Context, req request, sr SliceReader, exts []Extent) error {
	n := int64(req.length)
	var data [][]byte // the backend's slices, in order, for the data extents
	ends := make([]int, len(exts))
	lender, lends := sr.(SliceLender)
	var releases []func() // of lent slices, once the reply is out
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	for i, e := range exts {
		if !(sc.structured && e.Flags&StateZero != 0) {
			var err error
			before := len(data)
			if lends {
				var release func()
				data, release, err = lender.LendSlices(ctx, data, e.Offset, e.Length)
				releases = append(releases, release)
			} else {
				data, err = sr.ReadSlices(ctx, data, e.Offset, e.Length)
			}
			if err != nil {
				var got int64
				for _, d := range data[before:] {
					got += int64(len(d))
				}
				f := backendFailure("read", err)
				if sc.structured {
					return sc.send(func(w *bufio.Writer) { putErrorChunk(w, req.cookie, f, e.Offset+got) })
				}
				return sc.sendError(req, f)
			}
		}
		ends[i] = len(data)
	}
	var hdrs []byte // every header of the reply, sliced below
	bufs := make(net.Buffers, 0, len(data)+2*len(exts)+1)
	if !sc.structured {
		hdrs = appendSimple(hdrs, 0, req.cookie)
		bufs = append(append(bufs, hdrs), data...)
		return sc.sendBuffers(bufs)
	}
	if n == 0 {
		return sc.send(func(w *bufio.Writer) { putChunk(w, replyFlagDone, replyNone, req.cookie, 0) })
	}
	hdrs = make([]byte, 0, len(exts)*(structReplyHeaderSize+12))
	at, from := 0, 0
	for i, e := range exts {
		var flags uint16
		if i == len(exts)-1 {
			flags = replyFlagDone
		}
		if sc.structured && e.Flags&StateZero != 0 {
			hdrs = appendChunk(hdrs, flags, replyOffsetHole, req.cookie, 12)
			hdrs = be.AppendUint64(hdrs, uint64(e.Offset))
			hdrs = be.AppendUint32(hdrs, uint32(e.Length))
		} else {
			hdrs = appendChunk(hdrs, flags, replyOffsetData, req.cookie, uint32(8+e.Length))
			hdrs = be.AppendUint64(hdrs, uint64(e.Offset))
		}
		// Headers of consecutive hole chunks go out as one buffer.
		if ends[i] > from || i == len(exts)-1 {
			bufs = append(bufs, hdrs[at:])
			at = len(hdrs)
			bufs = append(bufs, data[from:ends[i]]...)
			from = ends[i]
		}
	}
	return sc.sendBuffers(bufs)
}

// sendBuffers writes one whole reply under the write lock, with one
// writev where the connection allows it.
func (sc *serverConn) sendBuffers(bufs net.Buffers) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if err := sc.w.Flush(); err != nil { // empty after every send; cheap
		return fmt.Errorf("sending reply: %w", err)
	}
	if _, err := bufs.WriteTo(sc.conn); err != nil {
		return fmt.Errorf("sending reply: %w", err)
	}
	return nil
}

// maxReplyExtents bounds the extents of one block status reply.
const maxReplyExtents = 64 << 10

func (sc *serverConn) blockStatus(ctx context.Context, req request) error {
	off, n := int64(req.off), int64(req.length)
	exts := []Extent{{Offset: off, Length: n}}
	if ab, ok := sc.exp.Backend.(AllocationBackend); ok {
		got, err := ab.BlockStatus(ctx, off, n)
		if err != nil {
			return sc.sendError(req, backendFailure("block status", err))
		}
		exts = clipExtents(got, off, n, true)
		if len(exts) == 0 {
			return sc.sendError(req, fail(errIO, "backend reported no extents at offset %d", off))
		}
	}
	if req.flags&CmdFlagReqOne != 0 {
		exts = exts[:1]
	}
	if len(exts) > maxReplyExtents {
		exts = exts[:maxReplyExtents]
	}
	return sc.send(func(w *bufio.Writer) {
		i := 0
		for id := range sc.meta {
			i++
			var flags uint16
			if i == len(sc.meta) {
				flags = replyFlagDone
			}
			putChunk(w, flags, replyBlockStatus, req.cookie, uint32(4+8*len(exts)))
			var p [8]byte
			be.PutUint32(p[:], id)
			w.Write(p[:4])
			for _, e := range exts {
				be.PutUint32(p[:], uint32(e.Length))
				be.PutUint32(p[4:], e.Flags&(StateHole|StateZero))
				w.Write(p[:])
			}
		}
	})
}

// clipExtents cuts a backend's extents to [off, off+n), drops gaps and
// overlaps, merges neighbours with equal flags and fills what the backend
// did not cover as data. partial allows the result to stop short of the
// end (for block status); otherwise it covers the range exactly.
func clipExtents(in []Extent, off, n int64, partial bool) []Extent {
	end := off + n
	var out []Extent
	pos := off
	add := func(e Extent) {
		if k := len(out); k > 0 && out[k-1].Flags == e.Flags {
			out[k-1].Length += e.Length
		} else {
			out = append(out, e)
		}
		pos = e.Offset + e.Length
	}
	for _, e := range in {
		s, t := max(e.Offset, pos), min(e.Offset+e.Length, end)
		if t <= s {
			continue
		}
		if s > pos {
			add(Extent{Offset: pos, Length: s - pos})
		}
		add(Extent{Offset: s, Length: t - s, Flags: e.Flags & (StateHole | StateZero)})
		if pos >= end {
			break
		}
	}
	if pos < end && (!partial || len(out) == 0) {
		add(Extent{Offset: pos, Length: end - pos})
	}
	// One chunk length field is 32 bits.
	for i := range out {
		if out[i].Length > 1<<31 {
			out[i].Length = 1 << 31
			out = out[:i+1]
			break
		}
	}
	return out
}

func (sc *serverConn) sendError(req request, f *failure) error {
	return sc.send(func(w *bufio.Writer) {
		if sc.structured {
			putErrorChunk(w, req.cookie, f, -1)
		} else {
			putSimple(w, uint32(f.errno), req.cookie)
		}
	})
}

// send writes one whole reply under the write lock.
func (sc *serverConn) send(write func(w *bufio.Writer)) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	write(sc.w)
	if err := sc.w.Flush(); err != nil {
		return fmt.Errorf("sending reply: %w", err)
	}
	return nil
}

func appendSimple(b []byte, errno uint32, cookie uint64) []byte {
	b = be.AppendUint32(b, magicSimpleReply)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, cookie)
}

func appendChunk(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = be.AppendUint32(b, magicStructReply)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	return be.AppendUint32(b, length)
}

func putSimple(w *bufio.Writer, errno uint32, cookie uint64) {
	var h [simpleReplyHeaderSize]byte
	w.Write(appendSimple(h[:0], errno, cookie))
}

func putChunk(w *bufio.Writer, flags, typ uint16, cookie uint64, length uint32) {
	var h [structReplyHeaderSize]byte
	w.Write(appendChunk(h[:0], flags, typ, cookie, length))
}

// putErrorChunk sends an error chunk (with the offset if at >= 0) that
// ends the reply.
func putErrorChunk(w *bufio.Writer, cookie uint64, f *failure, at int64) {
	msg := f.msg
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	typ, n := uint16(replyError), 6+len(msg)
	if at >= 0 {
		typ, n = replyErrorOffset, n+8
	}
	putChunk(w, replyFlagDone, typ, cookie, uint32(n))
	var p [8]byte
	be.PutUint32(p[:], uint32(f.errno))
	be.PutUint16(p[4:], uint16(len(msg)))
	w.Write(p[:6])
	w.WriteString(msg)
	if at >= 0 {
		be.PutUint64(p[:], uint64(at))
		w.Write(p[:])
	}
}
