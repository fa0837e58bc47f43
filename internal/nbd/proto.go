// Package nbd speaks the Network Block Device protocol, both as a client
// (to read QEMU fleecing exports, dirty bitmaps and any NBD server) and as a
// server (to serve restored points and receive replication).
//
// It implements the fixed newstyle handshake with structured replies and
// metadata contexts (base:allocation, qemu:dirty-bitmap:NAME), as written
// in the protocol specification (NetworkBlockDevice/nbd doc/proto.md).
// TLS and extended headers are not implemented: servers that require them
// are refused with a clear error.
package nbd

import (
	"encoding/binary"
	"strconv"
)

// Magic numbers of the handshake and transmission phases.
const (
	magicInit          = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption        = 0x49484156454f5054 // "IHAVEOPT"
	magicOldstyle      = 0x00420281861253
	magicOptionReply   = 0x0003e889045565a9
	magicRequest       = 0x25609513
	magicSimpleReply   = 0x67446698
	magicStructReply   = 0x668e33ef
	magicExtendedReply = 0x6e8a278c // sent only with extended headers, which we never negotiate
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1
)

// Transmission flags, as sent by the server for an export.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
	FlagSendResize      uint16 = 1 << 9
	FlagSendCache       uint16 = 1 << 10
	FlagSendFastZero    uint16 = 1 << 11
)

// Options of the handshake phase.
const (
	optExportName       = 1
	optAbort            = 2
	optList             = 3
	optStartTLS         = 5
	optInfo             = 6
	optGo               = 7
	optStructuredReply  = 8
	optListMetaContext  = 9
	optSetMetaContext   = 10
	optExtendedHeaders  = 11
	repAck              = 1
	repServer           = 2
	repInfo             = 3
	repMetaContext      = 4
	repErrBit           = 1 << 31
	repErrUnsup         = repErrBit | 1
	repErrPolicy        = repErrBit | 2
	repErrInvalid       = repErrBit | 3
	repErrPlatform      = repErrBit | 4
	repErrTLSReqd       = repErrBit | 5
	repErrUnknown       = repErrBit | 6
	repErrShutdown      = repErrBit | 7
	repErrBlockSizeReqd = repErrBit | 8
	repErrTooBig        = repErrBit | 9
	repErrExtHeaderReqd = repErrBit | 10
	infoExport          = 0
	infoName            = 1
	infoDescription     = 2
	infoBlockSize       = 3
)

// Commands of the transmission phase.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// CmdFlags are the per-request flags of the transmission phase.
type CmdFlags uint16

// Request flags.
const (
	// CmdFlagFUA asks the server to make a write durable before replying.
	CmdFlagFUA CmdFlags = 1 << 0
	// CmdFlagNoHole asks WRITE_ZEROES to allocate the range instead of punching a hole.
	CmdFlagNoHole CmdFlags = 1 << 1
	// CmdFlagDF asks for a READ reply in one data chunk (no holes, no fragments).
	CmdFlagDF CmdFlags = 1 << 2
	// CmdFlagReqOne asks BLOCK_STATUS for only one extent per context.
	CmdFlagReqOne CmdFlags = 1 << 3
	// CmdFlagFastZero asks WRITE_ZEROES to fail rather than be slow.
	CmdFlagFastZero CmdFlags = 1 << 4
)

// Structured reply chunk types and flags.
const (
	replyFlagDone         = 1 << 0
	replyNone             = 0
	replyOffsetData       = 1
	replyOffsetHole       = 2
	replyBlockStatus      = 5
	replyErrBit           = 1 << 15
	replyError            = replyErrBit | 1
	replyErrorOffset      = replyErrBit | 2
	requestHeaderSize     = 28
	simpleReplyHeaderSize = 16
	structReplyHeaderSize = 20
)

// Metadata contexts and their extent flags.
const (
	// ContextBaseAllocation is the standard allocation context.
	ContextBaseAllocation = "base:allocation"
	// ContextDirtyBitmapPrefix prefixes QEMU's dirty bitmap contexts.
	ContextDirtyBitmapPrefix = "qemu:dirty-bitmap:"

	// StateHole marks an unallocated extent in base:allocation.
	StateHole uint32 = 1 << 0
	// StateZero marks an extent that reads as zeros in base:allocation.
	StateZero uint32 = 1 << 1
	// StateDirty marks a dirty extent in qemu:dirty-bitmap:NAME.
	StateDirty uint32 = 1 << 0
)

// Limits: the protocol's strings and our own bounds on what we accept.
const (
	maxStringLen = 4096
	// DefaultMaxPayload is the largest READ or WRITE we send or accept
	// unless the peer's block size constraints say smaller.
	DefaultMaxPayload = 32 << 20
	// maxOptionLen bounds option data and option replies we accept.
	maxOptionLen = 64 << 10
	// maxNonPayload bounds one TRIM, WRITE_ZEROES or BLOCK_STATUS request
	// (the length field has 32 bits; stay well clear of its end).
	maxNonPayload = 1 << 30
	defaultPort   = "10809"
)

var be = binary.BigEndian

// Extent is a byte range of an export with its flags in one metadata
// context (StateHole, StateZero for base:allocation; StateDirty for dirty
// bitmaps).
type Extent struct {
	Offset, Length int64
	Flags          uint32
}

func optionName(o uint32) string {
	switch o {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optAbort:
		return "NBD_OPT_ABORT"
	case optList:
		return "NBD_OPT_LIST"
	case optStartTLS:
		return "NBD_OPT_STARTTLS"
	case optInfo:
		return "NBD_OPT_INFO"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optListMetaContext:
		return "NBD_OPT_LIST_META_CONTEXT"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	case optExtendedHeaders:
		return "NBD_OPT_EXTENDED_HEADERS"
	}
	return "option " + strconv.FormatUint(uint64(o), 10)
}

func replyName(r uint32) string {
	switch r {
	case repAck:
		return "NBD_REP_ACK"
	case repServer:
		return "NBD_REP_SERVER"
	case repInfo:
		return "NBD_REP_INFO"
	case repMetaContext:
		return "NBD_REP_META_CONTEXT"
	case repErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case repErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case repErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case repErrPlatform:
		return "NBD_REP_ERR_PLATFORM"
	case repErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD"
	case repErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case repErrShutdown:
		return "NBD_REP_ERR_SHUTDOWN"
	case repErrBlockSizeReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	case repErrExtHeaderReqd:
		return "NBD_REP_ERR_EXT_HEADER_REQD"
	}
	return "reply type " + strconv.FormatUint(uint64(r), 10)
}

func commandName(c uint16) string {
	switch c {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdDisc:
		return "disconnect"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdCache:
		return "cache"
	case cmdWriteZeroes:
		return "write-zeroes"
	case cmdBlockStatus:
		return "block-status"
	}
	return "command " + strconv.FormatUint(uint64(c), 10)
}
