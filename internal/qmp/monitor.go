package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by calls on a Monitor after Close.
var ErrClosed = errors.New("qmp monitor closed")

// ErrDisconnected is wrapped by every error caused by losing the connection
// to QEMU (the process died, or the socket was closed by the peer).
var ErrDisconnected = errors.New("connection to QEMU lost")

// Error is an error reply from QEMU: {"error": {"class": ..., "desc": ...}}.
// Execute returns it wrapped with the command name; use errors.As to get it.
type Error struct {
	Class string `json:"class"` // e.g. GenericError, CommandNotFound, DeviceNotFound, DeviceNotActive
	Desc  string `json:"desc"`  // QEMU's human-readable message
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// IsClass reports whether err carries a QEMU error reply of the given class.
func IsClass(err error, class string) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Class == class
}

// Version is the QEMU version announced in the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if v.Package != "" {
		s += " (" + v.Package + ")"
	}
	return s
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Monitor is one QMP connection. All methods are safe for concurrent use.
//
// A single reader goroutine owns the socket's read side: it routes each reply
// to the Execute call waiting on its id and each event to the subscriptions
// whose filter matches. It never blocks on a slow consumer (see Subscribe).
type Monitor struct {
	conn    net.Conn
	path    string
	version Version
	caps    []string

	writeMu sync.Mutex // serialises whole commands on the socket
	nextID  atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan reply
	subs    map[*Subscription]struct{}
	err     error // set once, when the reader stops; guarded by mu

	done      chan struct{} // closed when the reader has stopped
	closeOnce sync.Once
}

// reply is one response routed to an Execute call.
type reply struct {
	ret json.RawMessage
	err *Error
}

// message is any JSON object QEMU sends: greeting, reply or event.
type message struct {
	QMP       *greeting       `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// Dial connects to the QMP unix socket at socketPath, reads the greeting,
// negotiates capabilities (none are enabled; out-of-band execution is not
// used) and starts the reader.
//
// QEMU serves one client per QMP socket and accepts the next only when the
// current one disconnects: while another client holds the socket, the
// connection is made but no greeting arrives, so Dial waits until ctx is done
// and then fails naming that likely cause. Give ctx a deadline.
func Dial(ctx context.Context, socketPath string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("connecting to QMP socket %s: %w", socketPath, err)
	}
	// Bound the greeting by ctx: a deadline now, and cancellation via AfterFunc.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	br := bufio.NewReader(conn)
	dec := json.NewDecoder(br)
	var hello message
	err = dec.Decode(&hello)
	stop()
	if err == nil && hello.QMP == nil {
		err = fmt.Errorf("first message is not a QMP greeting")
	}
	if err != nil {
		conn.Close()
		// The read deadline is ctx's, and may fire a moment before ctx reports it.
		if cause := ctx.Err(); cause != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return nil, fmt.Errorf("waiting for the QMP greeting on %s (QEMU serves one client at a time: is another client connected?): %w", socketPath, cause)
		}
		return nil, fmt.Errorf("reading the QMP greeting on %s: %w", socketPath, err)
	}
	_ = conn.SetReadDeadline(time.Time{})

	m := &Monitor{
		conn: conn,
		path: socketPath,
		version: Version{
			Major:   hello.QMP.Version.QEMU.Major,
			Minor:   hello.QMP.Version.QEMU.Minor,
			Micro:   hello.QMP.Version.QEMU.Micro,
			Package: hello.QMP.Version.Package,
		},
		caps:    hello.QMP.Capabilities,
		pending: make(map[string]chan reply),
		subs:    make(map[*Subscription]struct{}),
		done:    make(chan struct{}),
	}
	go m.read(dec)
	if err := m.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		m.Close()
		return nil, fmt.Errorf("negotiating QMP capabilities on %s: %w", socketPath, err)
	}
	return m, nil
}

// Version is the QEMU version from the greeting.
func (m *Monitor) Version() Version { return m.version }

// Capabilities are the QMP capabilities QEMU offered in the greeting.
func (m *Monitor) Capabilities() []string { return append([]string(nil), m.caps...) }

// PeerPID is the process id of the QEMU at the other end of the socket
// (SO_PEERCRED), or an error when the socket cannot say.
func (m *Monitor) PeerPID() (int, error) {
	uc, ok := m.conn.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials of %s: %w", m.path, cerr)
	}
	return int(cred.Pid), nil
}

// Done is closed when the connection has ended (Close, or QEMU went away).
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Err reports why the connection ended, or nil while it is up.
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close closes the connection. Calls waiting for a reply fail with ErrClosed,
// subscriptions end. It waits for the reader to stop and is idempotent.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		if m.err == nil {
			m.err = ErrClosed
		}
		m.mu.Unlock()
		m.conn.Close()
	})
	<-m.done
	return nil
}

// Execute runs one QMP command. args (nil for none) is marshalled as the
// command's "arguments"; when result is non-nil the "return" value is
// unmarshalled into it.
//
// It is safe to call from many goroutines; each call has a unique id and
// gets its own reply. If ctx ends first, Execute returns ctx's error and
// the reply, when it comes, is dropped: the command may still have run.
// A QEMU error reply is returned as a *Error wrapped with the command name;
// losing the connection fails every waiting call with ErrDisconnected.
func (m *Monitor) Execute(ctx context.Context, command string, args, result any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	id := strconv.FormatUint(m.nextID.Add(1), 10)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: encoding arguments: %w", command, err)
	}
	line = append(line, '\n')

	ch := make(chan reply, 1)
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	m.pending[id] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}

	if err := m.write(ctx, line); err != nil {
		forget()
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("qmp %s: %w", command, r.err)
		}
		if result != nil {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decoding reply %s: %w", command, truncate(r.ret), err)
			}
		}
		return nil
	case <-m.done:
		// The reader may have routed our reply just before stopping.
		select {
		case r := <-ch:
			if r.err != nil {
				return fmt.Errorf("qmp %s: %w", command, r.err)
			}
			if result != nil {
				if err := json.Unmarshal(r.ret, result); err != nil {
					return fmt.Errorf("qmp %s: decoding reply %s: %w", command, truncate(r.ret), err)
				}
			}
			return nil
		default:
		}
		return fmt.Errorf("qmp %s: %w", command, m.Err())
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp %s: abandoned waiting for the reply: %w", command, ctx.Err())
	}
}

// write sends one command line. A write cut short by ctx leaves a partial
// command on the socket, so that closes the connection.
func (m *Monitor) write(ctx context.Context, line []byte) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		_ = m.conn.SetWriteDeadline(dl)
	} else {
		_ = m.conn.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = m.conn.SetWriteDeadline(time.Now()) })
	n, err := m.conn.Write(line)
	stop()
	if err == nil {
		return nil
	}
	if n > 0 {
		m.fail(fmt.Errorf("%w: a command was cut short while being sent: %v", ErrDisconnected, err))
		m.conn.Close()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("sending the command: %w", ctx.Err())
	}
	if e := m.Err(); e != nil {
		return e
	}
	return fmt.Errorf("%w: sending the command: %v", ErrDisconnected, err)
}

// fail records why the connection ended, keeping the first reason.
func (m *Monitor) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.mu.Unlock()
}

// read is the single reader goroutine.
func (m *Monitor) read(dec *json.Decoder) {
	var cause error
	for {
		var msg message
		if err := dec.Decode(&msg); err != nil {
			cause = err
			break
		}
		switch {
		case msg.Event != "":
			ev := Event{Name: msg.Event, Data: msg.Data}
			if ts := msg.Timestamp; ts != nil {
				ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
			}
			m.publish(ev)
		case msg.ID != nil:
			var id string
			if err := json.Unmarshal(msg.ID, &id); err != nil {
				continue // not one of ours: we only send string ids
			}
			m.mu.Lock()
			ch, ok := m.pending[id]
			delete(m.pending, id)
			m.mu.Unlock()
			if ok { // else the caller gave up: drop the late reply
				ch <- reply{ret: msg.Return, err: msg.Error}
			}
		default:
			// A reply without id only comes for input QEMU could not parse
			// as a command; we never send such input, so ignore it.
		}
	}
	m.fail(fmt.Errorf("%w (%s): %v", ErrDisconnected, m.path, cause))
	m.conn.Close()
	m.mu.Lock()
	for id := range m.pending {
		delete(m.pending, id) // waiters see done closed and read m.err
	}
	subs := m.subs
	m.subs = nil
	err := m.err
	m.mu.Unlock()
	for s := range subs {
		s.end(err)
	}
	close(m.done)
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
