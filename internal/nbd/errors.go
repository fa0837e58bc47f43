package nbd

import (
	"errors"
	"fmt"
	"syscall"
)

// Error is an error reply from an NBD server to a command. Errno is the
// protocol's error value (which uses Linux numbering), so
// errors.Is(err, syscall.EIO) works on it.
type Error struct {
	// Op names the command ("read", "write", ...).
	Op string
	// Offset and Length are the request's range.
	Offset, Length int64
	// Errno is the error the server sent.
	Errno syscall.Errno
	// Message is the server's explanation, if it sent one.
	Message string
	// ErrorOffset is where the error happened inside the range, or -1.
	ErrorOffset int64
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nbd %s of %d bytes at offset %d: server replied %s (%s)",
		e.Op, e.Length, e.Offset, errnoName(e.Errno), e.Errno.Error())
	if e.ErrorOffset >= 0 {
		s += fmt.Sprintf(" at offset %d", e.ErrorOffset)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the errno, for errors.Is(err, syscall.EIO).
func (e *Error) Unwrap() error { return e.Errno }

// OptionError is a refusal by the server of a handshake option: the export
// does not exist, the option is unsupported, TLS is required, ...
type OptionError struct {
	Option  uint32
	Reply   uint32
	Message string
}

func (e *OptionError) Error() string {
	s := fmt.Sprintf("nbd handshake: server refused %s with %s", optionName(e.Option), replyName(e.Reply))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unsupported reports whether the server does not know the option.
func (e *OptionError) Unsupported() bool { return e.Reply == repErrUnsup }

// ErrProtocol is wrapped by every error caused by a peer breaking the
// protocol (bad magic, impossible lengths, replies to unknown requests).
// The connection is unusable after one.
var ErrProtocol = errors.New("nbd protocol violation")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ErrClosed is returned for requests on a closed client.
var ErrClosed = errors.New("nbd client closed")

// The errors the protocol defines, with their Linux values.
const (
	errPerm     = syscall.EPERM
	errIO       = syscall.EIO
	errNoMem    = syscall.ENOMEM
	errInval    = syscall.EINVAL
	errNoSpc    = syscall.ENOSPC
	errOverflow = syscall.EOVERFLOW
	errNotSup   = syscall.ENOTSUP
	errShutdown = syscall.ESHUTDOWN
)

func errnoName(e syscall.Errno) string {
	switch e {
	case errPerm:
		return "EPERM"
	case errIO:
		return "EIO"
	case errNoMem:
		return "ENOMEM"
	case errInval:
		return "EINVAL"
	case errNoSpc:
		return "ENOSPC"
	case errOverflow:
		return "EOVERFLOW"
	case errNotSup:
		return "ENOTSUP"
	case errShutdown:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// wireErrno maps a backend's error to one of the errors the protocol
// defines; anything unknown is EIO, as the specification asks.
func wireErrno(err error) syscall.Errno {
	var ne *Error
	if errors.As(err, &ne) {
		return wireErrno(ne.Errno)
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case errPerm, errIO, errNoMem, errInval, errNoSpc, errOverflow, errNotSup, errShutdown:
			return en
		case syscall.EROFS, syscall.EACCES:
			return errPerm
		case syscall.EFBIG, syscall.EDQUOT:
			return errNoSpc
		}
	}
	return errIO
}
