package nbd

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// ExportInfo describes an export as its server announced it.
type ExportInfo struct {
	Name, Description string
	// Size is the export's size in bytes.
	Size int64
	// Flags are the transmission flags (FlagReadOnly, FlagSendFlush, ...).
	Flags uint16
	// Block size constraints: requests must be aligned to MinBlock and
	// carry at most MaxBlock bytes of payload; PreferredBlock is the
	// granularity that avoids read-modify-write on the server.
	MinBlock, PreferredBlock, MaxBlock uint32
}

// ExportEntry is one export listed by NBD_OPT_LIST.
type ExportEntry struct {
	Name, Description string
}

// handshake runs the client side of the fixed newstyle handshake's
// option phase over one connection.
type handshake struct {
	r        *bufio.Reader
	w        io.Writer
	noZeroes bool
	// structured is set once NBD_OPT_STRUCTURED_REPLY was acknowledged.
	structured bool
}

// start reads the server's greeting and sends the client flags.
func (h *handshake) start() error {
	var greet [18]byte
	if _, err := io.ReadFull(h.r, greet[:16]); err != nil {
		return fmt.Errorf("reading server greeting: %w", err)
	}
	if be.Uint64(greet[0:]) != magicInit {
		return protoErr("server greeting does not start with NBDMAGIC (is this an NBD server?)")
	}
	switch be.Uint64(greet[8:]) {
	case magicOption:
	case magicOldstyle:
		return fmt.Errorf("server speaks the oldstyle NBD handshake, which is not supported")
	default:
		return protoErr("unknown handshake magic %#x", be.Uint64(greet[8:]))
	}
	if _, err := io.ReadFull(h.r, greet[16:18]); err != nil {
		return fmt.Errorf("reading handshake flags: %w", err)
	}
	flags := be.Uint16(greet[16:])
	if flags&flagFixedNewstyle == 0 {
		return fmt.Errorf("server does not speak the fixed newstyle NBD handshake, which is required")
	}
	cflags := uint32(flagCFixedNewstyle)
	if flags&flagNoZeroes != 0 {
		cflags |= flagCNoZeroes
		h.noZeroes = true
	}
	var b [4]byte
	be.PutUint32(b[:], cflags)
	if _, err := h.w.Write(b[:]); err != nil {
		return fmt.Errorf("sending client flags: %w", err)
	}
	return nil
}

func (h *handshake) sendOption(opt uint32, data []byte) error {
	buf := make([]byte, 16+len(data))
	be.PutUint64(buf[0:], magicOption)
	be.PutUint32(buf[8:], opt)
	be.PutUint32(buf[12:], uint32(len(data)))
	copy(buf[16:], data)
	if _, err := h.w.Write(buf); err != nil {
		return fmt.Errorf("sending %s: %w", optionName(opt), err)
	}
	return nil
}

// optionReply is one reply to an option.
type optionReply struct {
	typ  uint32
	data []byte
}

// err turns an error reply into an *OptionError (nil for other replies).
func (r optionReply) err(opt uint32) error {
	if r.typ&repErrBit == 0 {
		return nil
	}
	return &OptionError{Option: opt, Reply: r.typ, Message: printable(r.data)}
}

func (h *handshake) readReply(opt uint32) (optionReply, error) {
	var hdr [20]byte
	if _, err := io.ReadFull(h.r, hdr[:]); err != nil {
		return optionReply{}, fmt.Errorf("reading reply to %s: %w", optionName(opt), err)
	}
	if m := be.Uint64(hdr[0:]); m != magicOptionReply {
		return optionReply{}, protoErr("reply to %s has magic %#x", optionName(opt), m)
	}
	if got := be.Uint32(hdr[8:]); got != opt {
		return optionReply{}, protoErr("reply to %s names %s", optionName(opt), optionName(got))
	}
	r := optionReply{typ: be.Uint32(hdr[12:])}
	n := be.Uint32(hdr[16:])
	if n > maxOptionLen {
		return optionReply{}, protoErr("reply to %s carries %d bytes (limit %d)", optionName(opt), n, maxOptionLen)
	}
	r.data = make([]byte, n)
	if _, err := io.ReadFull(h.r, r.data); err != nil {
		return optionReply{}, fmt.Errorf("reading reply to %s: %w", optionName(opt), err)
	}
	return r, nil
}

// structuredReplies asks for structured replies; a server that does not
// know them is fine (reads then come as simple replies).
func (h *handshake) structuredReplies() error {
	if err := h.sendOption(optStructuredReply, nil); err != nil {
		return err
	}
	r, err := h.readReply(optStructuredReply)
	if err != nil {
		return err
	}
	switch {
	case r.typ == repAck:
		h.structured = true
	case r.typ&repErrBit != 0:
		// Unsupported or refused: carry on with simple replies.
	default:
		return protoErr("reply %s to NBD_OPT_STRUCTURED_REPLY", replyName(r.typ))
	}
	return nil
}

// metaContexts sends NBD_OPT_SET_META_CONTEXT (set) or
// NBD_OPT_LIST_META_CONTEXT and returns the contexts the server replied
// with, by name. A server that refuses returns no contexts and no error.
func (h *handshake) metaContexts(opt uint32, export string, queries []string) (map[string]uint32, error) {
	if len(export) > maxStringLen {
		return nil, fmt.Errorf("export name longer than %d bytes", maxStringLen)
	}
	data := be.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = be.AppendUint32(data, uint32(len(queries)))
	for _, q := range queries {
		if len(q) > maxStringLen {
			return nil, fmt.Errorf("metadata context query longer than %d bytes", maxStringLen)
		}
		data = be.AppendUint32(data, uint32(len(q)))
		data = append(data, q...)
	}
	if err := h.sendOption(opt, data); err != nil {
		return nil, err
	}
	out := map[string]uint32{}
	for {
		r, err := h.readReply(opt)
		if err != nil {
			return nil, err
		}
		switch {
		case r.typ == repAck:
			return out, nil
		case r.typ == repMetaContext:
			if len(r.data) < 4 {
				return nil, protoErr("NBD_REP_META_CONTEXT of %d bytes", len(r.data))
			}
			out[string(r.data[4:])] = be.Uint32(r.data)
		case r.typ&repErrBit != 0:
			// The replies end with the error; nothing was selected.
			return map[string]uint32{}, nil
		default:
			return nil, protoErr("reply %s to %s", replyName(r.typ), optionName(opt))
		}
	}
}

// info sends NBD_OPT_GO or NBD_OPT_INFO for export and collects the
// export's information. After a successful NBD_OPT_GO the connection is
// in the transmission phase.
func (h *handshake) info(opt uint32, export string) (ExportInfo, error) {
	if len(export) > maxStringLen {
		return ExportInfo{}, fmt.Errorf("export name longer than %d bytes", maxStringLen)
	}
	data := be.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = be.AppendUint16(data, 3)
	data = be.AppendUint16(data, infoBlockSize)
	data = be.AppendUint16(data, infoName)
	data = be.AppendUint16(data, infoDescription)
	if err := h.sendOption(opt, data); err != nil {
		return ExportInfo{}, err
	}
	info := ExportInfo{Name: export}
	haveExport := false
	for {
		r, err := h.readReply(opt)
		if err != nil {
			return ExportInfo{}, err
		}
		if err := r.err(opt); err != nil {
			return ExportInfo{}, err
		}
		switch r.typ {
		case repAck:
			if !haveExport {
				return ExportInfo{}, protoErr("%s acknowledged without NBD_INFO_EXPORT", optionName(opt))
			}
			return info, nil
		case repInfo:
			if err := parseInfo(r.data, &info); err != nil {
				return ExportInfo{}, err
			}
			if len(r.data) >= 2 && be.Uint16(r.data) == infoExport {
				haveExport = true
			}
		default:
			return ExportInfo{}, protoErr("reply %s to %s", replyName(r.typ), optionName(opt))
		}
	}
}

// parseInfo applies one NBD_REP_INFO payload to info. Unknown
// information types are ignored, as the specification asks.
func parseInfo(data []byte, info *ExportInfo) error {
	if len(data) < 2 {
		return protoErr("NBD_REP_INFO of %d bytes", len(data))
	}
	typ, body := be.Uint16(data), data[2:]
	switch typ {
	case infoExport:
		if len(body) != 10 {
			return protoErr("NBD_INFO_EXPORT of %d bytes, want 10", len(body))
		}
		size := be.Uint64(body)
		if size > math.MaxInt64 {
			return protoErr("export size %d does not fit in int64", size)
		}
		info.Size, info.Flags = int64(size), be.Uint16(body[8:])
	case infoName:
		info.Name = string(body)
	case infoDescription:
		info.Description = string(body)
	case infoBlockSize:
		if len(body) != 12 {
			return protoErr("NBD_INFO_BLOCK_SIZE of %d bytes, want 12", len(body))
		}
		minB, pref, maxB := be.Uint32(body), be.Uint32(body[4:]), be.Uint32(body[8:])
		if minB == 0 || minB > 64<<10 || bits.OnesCount32(minB) != 1 {
			return protoErr("minimum block size %d is not a power of two up to 64 KiB", minB)
		}
		if pref < minB || bits.OnesCount32(pref) != 1 {
			return protoErr("preferred block size %d is not a power of two at least the minimum %d", pref, minB)
		}
		if maxB < minB || (maxB != math.MaxUint32 && maxB%minB != 0) {
			return protoErr("maximum block size %d is not a multiple of the minimum %d", maxB, minB)
		}
		info.MinBlock, info.PreferredBlock, info.MaxBlock = minB, pref, maxB
	}
	return nil
}

// exportName enters the transmission phase the old way, for servers
// without NBD_OPT_GO. The server closes the connection if the export
// does not exist.
func (h *handshake) exportName(export string) (ExportInfo, error) {
	if err := h.sendOption(optExportName, []byte(export)); err != nil {
		return ExportInfo{}, err
	}
	n := 10
	if !h.noZeroes {
		n += 124
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(h.r, buf); err != nil {
		return ExportInfo{}, fmt.Errorf("server closed the connection after NBD_OPT_EXPORT_NAME %q (no such export?): %w", export, err)
	}
	size := be.Uint64(buf)
	if size > math.MaxInt64 {
		return ExportInfo{}, protoErr("export size %d does not fit in int64", size)
	}
	return ExportInfo{Name: export, Size: int64(size), Flags: be.Uint16(buf[8:])}, nil
}

// list returns the server's exports (NBD_OPT_LIST).
func (h *handshake) list() ([]ExportEntry, error) {
	if err := h.sendOption(optList, nil); err != nil {
		return nil, err
	}
	var out []ExportEntry
	for {
		r, err := h.readReply(optList)
		if err != nil {
			return nil, err
		}
		if err := r.err(optList); err != nil {
			return nil, err
		}
		switch r.typ {
		case repAck:
			return out, nil
		case repServer:
			if len(r.data) < 4 {
				return nil, protoErr("NBD_REP_SERVER of %d bytes", len(r.data))
			}
			n := be.Uint32(r.data)
			if uint64(n) > uint64(len(r.data)-4) {
				return nil, protoErr("NBD_REP_SERVER name of %d bytes in a %d-byte reply", n, len(r.data))
			}
			out = append(out, ExportEntry{Name: string(r.data[4 : 4+n]), Description: string(r.data[4+n:])})
		default:
			return nil, protoErr("reply %s to NBD_OPT_LIST", replyName(r.typ))
		}
	}
}

// abort ends the handshake politely. The server may close without a
// reply; either way the caller closes the connection next.
func (h *handshake) abort() {
	if h.sendOption(optAbort, nil) == nil {
		h.readReply(optAbort)
	}
}

// printable makes a server-supplied message safe to put in an error.
func printable(b []byte) string {
	if len(b) > 512 {
		b = b[:512]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
