// Package guestagent is a client for the QEMU guest agent (qemu-ga), the
// daemon inside a VM that lifeboat asks to freeze the guest's filesystems so
// that a backup sees them consistent.
//
// The agent speaks QMP-style JSON over a virtio-serial port that QEMU exposes
// on the host as a unix socket (a chardev). Unlike QMP there is no greeting
// and no capabilities negotiation, and the stream may hold stale bytes from an
// earlier client, or a half-read answer after a timeout. The client therefore
// resynchronises with guest-sync-delimited on connect and after any error that
// may have left the stream out of step: it sends 0xFF (which resets the
// agent's parser), then discards everything up to the agent's own 0xFF
// sentinel and the answer carrying the client's random id.
//
// Freezing is dangerous to get wrong: on Linux the agent never thaws by
// itself, and while frozen every write in the guest blocks. Whoever freezes
// must thaw on every path (success, error, timeout, cancel, panic). Use Freeze,
// whose thaw function is safe to defer and to call again.
package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// sentinel precedes the answer to guest-sync-delimited, and a client sends it
// to flush the agent's JSON parser: 0xFF never occurs in valid UTF-8.
const sentinel = 0xFF

// maxLine bounds one answer; guest-info is the largest we ask for (a few KiB).
const maxLine = 4 << 20

// Error is an error answer from the agent.
type Error struct {
	Command string // the command that failed, e.g. "guest-fsfreeze-freeze"
	Class   string // the agent's error class, e.g. "GenericError"
	Desc    string // the agent's description
}

func (e *Error) Error() string {
	return fmt.Sprintf("guest agent: %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// Client is a connection to one guest agent. Its methods are safe for
// concurrent use; calls are serialised, as the agent answers one at a time.
type Client struct {
	socket string
	conn   net.Conn
	r      *bufio.Reader

	mu       sync.Mutex
	inSync   bool // false until a guest-sync-delimited round trip succeeds
	closed   bool
	sequence int
}

// Dial connects to the guest agent's unix socket and synchronises the stream.
// QEMU accepts the connection even when no agent runs in the guest (and
// queues a second client while one is connected), so only the answer to
// guest-sync-delimited proves an agent is there: without one, Dial fails when
// ctx ends (or after DefaultTimeout without a deadline).
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connecting to guest agent socket %s: %w", socket, err)
	}
	c := &Client{socket: socket, conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	c.mu.Lock()
	defer c.mu.Unlock()
	err = c.withDeadline(ctx, func() error { return c.sync() })
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("guest agent on %s: %w", socket, err)
	}
	return c, nil
}

// Close closes the connection. It does not thaw anything.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// withDeadline runs fn with the connection's deadline set from ctx (or
// DefaultTimeout), and cuts fn's I/O short when ctx is cancelled. An error
// from an interrupted exchange is reported as ctx's error. Callers hold c.mu.
func (c *Client) withDeadline(ctx context.Context, fn func() error) error {
	if c.closed {
		return errors.New("guest agent client is closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	timeout := time.Until(deadline).Round(time.Millisecond)
	if err := c.conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		c.conn.SetDeadline(time.Unix(1, 0)) // unblocks Read and Write now
	})
	err := fn()
	if !stop() {
		<-interrupted // don't let a late interruption hit the next call
	}
	c.conn.SetDeadline(time.Time{})
	var agentErr *Error
	if err == nil || errors.As(err, &agentErr) {
		return err // a whole answer was read: the stream is still in step
	}
	c.inSync = false // an answer may still be on its way
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%v: %w", err, ctxErr)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%v: no answer within %v: %w", err, timeout, context.DeadlineExceeded)
	}
	return err
}

// request is one command on the wire.
type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id,omitempty"`
}

// response is one answer on the wire.
type response struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID json.RawMessage `json:"id"`
}

// sync runs guest-sync-delimited: flush the agent's parser with 0xFF, ask it
// to echo a random id, drop everything up to its 0xFF and then every answer
// that is not the echo of our id.
func (c *Client) sync() error {
	id := rand.Int64N(1 << 52) // exact in JSON numbers
	req, err := json.Marshal(request{Execute: "guest-sync-delimited", Arguments: map[string]int64{"id": id}})
	if err != nil {
		return err
	}
	if _, err := c.conn.Write(append([]byte{sentinel}, req...)); err != nil {
		return fmt.Errorf("sending guest-sync-delimited: %w", err)
	}
	// The 0xFF we sent makes the agent answer with a parse error first; that
	// and any stale answer come before its own 0xFF and the echo of our id
	// (readLine drops what precedes a 0xFF). A QMP monitor greets every
	// client unprompted and never echoes: its greeting says at once that
	// this is the wrong socket, rather than after the whole timeout.
	for {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("waiting for the agent's answer to guest-sync-delimited (is qemu-ga running in the guest, and no other client connected?): %w", err)
		}
		if isQMPGreeting(line) {
			return ErrQMPSocket
		}
		var resp response
		if json.Unmarshal(line, &resp) != nil || resp.Error != nil {
			continue
		}
		var got int64
		if json.Unmarshal(resp.Return, &got) == nil && got == id {
			c.inSync = true
			return nil
		}
	}
}

// ErrQMPSocket is Dial's error for a socket where a QMP monitor answers.
var ErrQMPSocket = errors.New("this is a QMP socket, not a guest agent socket")

// isQMPGreeting reports whether line is a QMP monitor's greeting,
// {"QMP": {"version": ..., "capabilities": ...}}.
func isQMPGreeting(line []byte) bool {
	var g struct {
		QMP json.RawMessage `json:"QMP"`
	}
	return json.Unmarshal(line, &g) == nil && g.QMP != nil
}

// readLine reads one answer. The agent ends each with a newline; a sentinel
// inside the line (from a resync racing a stale answer) starts it afresh.
func (c *Client) readLine() ([]byte, error) {
	var buf []byte
	for {
		part, err := c.r.ReadSlice('\n')
		buf = append(buf, part...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("answer longer than %d bytes", maxLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(buf, sentinel); i >= 0 {
			buf = buf[i+1:]
		}
		return bytes.TrimSpace(buf), nil
	}
}

// Call runs one agent command with the given arguments (nil for none) and
// decodes its return value into out (nil to discard it). An error answer is
// returned as *Error. Calls resynchronise the stream first when an earlier
// call was cut short.
func (c *Client) Call(ctx context.Context, command string, args, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.withDeadline(ctx, func() error {
		if !c.inSync {
			if err := c.sync(); err != nil {
				return err
			}
		}
		c.sequence++
		id := fmt.Sprintf("lifeboat-%d", c.sequence)
		req, err := json.Marshal(request{Execute: command, Arguments: args, ID: id})
		if err != nil {
			return fmt.Errorf("encoding %s: %w", command, err)
		}
		if _, err := c.conn.Write(req); err != nil {
			return fmt.Errorf("sending %s: %w", command, err)
		}
		wantID, _ := json.Marshal(id)
		for {
			line, err := c.readLine()
			if err != nil {
				return fmt.Errorf("reading the answer to %s: %w", command, err)
			}
			var resp response
			if err := json.Unmarshal(line, &resp); err != nil {
				c.inSync = false
				return fmt.Errorf("decoding the answer to %s: %w (%q)", command, err, line)
			}
			// The agent echoes our id; an answer without it (an agent too old
			// to echo ids) is taken as ours, since the stream is in sync.
			if resp.ID != nil && !bytes.Equal(resp.ID, wantID) {
				continue
			}
			if resp.Error != nil {
				return &Error{Command: command, Class: resp.Error.Class, Desc: resp.Error.Desc}
			}
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("decoding the return of %s: %w (%s)", command, err, resp.Return)
			}
			return nil
		}
	})
	if err != nil {
		var agentErr *Error
		if errors.As(err, &agentErr) {
			return err
		}
		return fmt.Errorf("guest agent on %s: %s: %w", c.socket, command, err)
	}
	return nil
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.Call(ctx, "guest-ping", nil, nil)
}

// Info describes the agent.
type Info struct {
	Version  string    `json:"version"`
	Commands []Command `json:"supported_commands"`
}

// Command is one command the agent knows. Enabled is false for commands the
// agent's configuration blocks, and for all but a safe few while frozen.
type Command struct {
	Name            string `json:"name"`
	Enabled         bool   `json:"enabled"`
	SuccessResponse bool   `json:"success-response"`
}

// Supports reports whether the agent has the named command enabled.
func (i Info) Supports(name string) bool {
	for _, c := range i.Commands {
		if c.Name == name {
			return c.Enabled
		}
	}
	return false
}

// Info returns the agent's version and commands.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.Call(ctx, "guest-info", nil, &info)
	return info, err
}

// FreezeStatus is the agent's view of the guest's filesystems.
type FreezeStatus string

// The values guest-fsfreeze-status returns.
const (
	Thawed FreezeStatus = "thawed"
	Frozen FreezeStatus = "frozen"
)

// FreezeStatus asks whether the agent holds the filesystems frozen.
func (c *Client) FreezeStatus(ctx context.Context) (FreezeStatus, error) {
	var s FreezeStatus
	err := c.Call(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// FreezeFilesystems freezes every freezable mounted filesystem in the guest
// (guest-fsfreeze-freeze) and returns how many it froze. Freezing first
// flushes dirty data, so it can take long on a busy guest, and hang on a stuck
// one; the call returns when ctx ends, but the agent may still complete the
// freeze afterwards. On an error answer the agent has thawed whatever it had
// frozen. An agent that is already frozen refuses (the command is disabled
// while frozen). Whenever this returns anything but an error answer from the
// agent, the caller must call ThawFilesystems; prefer Freeze, which does.
func (c *Client) FreezeFilesystems(ctx context.Context) (int, error) {
	var n int
	err := c.Call(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// ThawFilesystems thaws the guest's filesystems (guest-fsfreeze-thaw) and
// returns how many it thawed; 0 when nothing was frozen.
func (c *Client) ThawFilesystems(ctx context.Context) (int, error) {
	var n int
	err := c.Call(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// Freeze freezes the guest's filesystems, waiting at most timeout (and no
// longer than ctx) for the agent, and returns the function that thaws them.
// Defer thaw right away: it is safe to call more than once and from several
// goroutines; once a thaw has succeeded later calls return nil, and after a
// failed one the next call tries again. Thaw uses its own context, so pass
// one that is still live when ctx has ended. Call thaw before Close.
//
// The agent on Linux never thaws by itself: a guest stays frozen (all writes
// blocked) until someone thaws it, even after the client that froze it has
// gone. So when the freeze times out, is cancelled or loses the connection,
// Freeze thaws before it returns the error, since a freeze cut short on our
// side may still complete in the guest; that thaw gets a fresh timeout of at
// least DefaultTimeout, even if ctx was cancelled, and the error says whether
// it worked. When the agent answers with an error it has already thawed what
// it froze, and Freeze does not thaw: if the guest was frozen before (a freeze
// that someone never thawed), the error says so and leaves that freeze to its
// owner. Freeze returns thaw as nil only together with an error.
func (c *Client) Freeze(ctx context.Context, timeout time.Duration) (thaw func(context.Context) error, err error) {
	var (
		mu     sync.Mutex
		thawed bool
	)
	thaw = func(tctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if thawed {
			return nil
		}
		if _, err := c.ThawFilesystems(tctx); err != nil {
			return fmt.Errorf("thawing guest filesystems: %w", err)
		}
		thawed = true
		return nil
	}

	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = c.FreezeFilesystems(fctx)
	if err == nil {
		return thaw, nil
	}
	// What follows gets a fresh deadline, fctx may be what just ran out, and
	// a generous one: the agent answers in order, so a thaw waits for a slow
	// freeze still flushing in the guest.
	after, acancel := context.WithTimeout(context.WithoutCancel(ctx), max(timeout, DefaultTimeout))
	defer acancel()
	var agentErr *Error
	if errors.As(err, &agentErr) {
		if st, serr := c.FreezeStatus(after); serr == nil && st == Frozen {
			return nil, fmt.Errorf("freezing guest filesystems: %w; the guest is already frozen by an earlier freeze that was not thawed", err)
		}
		return nil, fmt.Errorf("freezing guest filesystems: %w", err)
	}
	if terr := thaw(after); terr != nil {
		return nil, fmt.Errorf("freezing guest filesystems: %w; the thaw after it failed too, so the guest may still be frozen: %w", err, terr)
	}
	return nil, fmt.Errorf("freezing guest filesystems (thawed again): %w", err)
}
