package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
)

// Backend stores the bytes of an export. All methods must be safe for
// concurrent use: a connection handles its requests in parallel.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	// Size is the export's size in bytes; it does not change while served.
	Size() int64
	// Flush makes completed writes durable.
	Flush(ctx context.Context) error
	// Trim says a range is no longer needed; it may read back as anything.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes makes a range read as zeros, allocated if noHole.
	WriteZeroes(ctx context.Context, off, length int64, noHole bool) error
}

// AllocationBackend is a Backend that knows which of its extents are
// holes. The server uses it for base:allocation and to send holes in
// reads without reading them.
type AllocationBackend interface {
	Backend
	// BlockStatus returns extents covering at least the start of
	// [off, off+length), in order, with StateHole and StateZero flags.
	BlockStatus(ctx context.Context, off, length int64) ([]Extent, error)
}

// SliceReader is a Backend that can lend its bytes instead of copying
// them: the server writes a read's reply straight from the slices (one
// writev), which saves a copy and a buffer per read.
type SliceReader interface {
	// ReadSlices appends to dst slices that hold [off, off+n) in order
	// and returns them. The caller only reads them, possibly after
	// further calls; they must never change (immutable data, such as
	// decoded chunks no one writes again). On error, the slices returned
	// cover the range's start that was read.
	ReadSlices(ctx context.Context, dst [][]byte, off, n int64) ([][]byte, error)
}

// SliceLender is a SliceReader that can also lend its slices for one
// reply only, so that it may reuse their memory afterwards (decoded-chunk
// buffers, instead of allocating one per chunk): the server uses
// LendSlices when the backend has it.
type SliceLender interface {
	SliceReader
	// LendSlices is ReadSlices whose slices stay unchanged only until
	// release is called; the server calls it once, after the reply is
	// written or has failed. release is never nil, even with an error.
	LendSlices(ctx context.Context, dst [][]byte, off, n int64) (slices [][]byte, release func(), err error)
}

// Export is a named export of a Server.
type Export struct {
	// Name is what clients ask for. The export named "" is the default
	// export; if there is none, a server with one export serves it for "".
	Name        string
	Description string
	Backend     Backend
	// ReadOnly refuses writes (EPERM) and says so in the export's flags.
	ReadOnly bool
	// MultiConn says clients may spread requests over many connections:
	// the backend's flush covers writes made through any of them.
	MultiConn bool
	// Block size constraints announced to clients; zeros mean 1, 4096 and
	// DefaultMaxPayload. MaxBlockSize also bounds READ and WRITE payloads.
	MinBlockSize, PreferredBlockSize, MaxBlockSize uint32
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Server serves exports over any number of listeners. The zero value is
// not usable: make one with NewServer.
type Server struct {
	// Logf, if set, receives a line for each connection that ends with an
	// error (protocol violations, I/O errors).
	Logf func(format string, args ...any)

	// MaxInFlight bounds the requests of one connection handled at once
	// (16 when zero); the connection stops reading beyond it.
	MaxInFlight int

	ctx    context.Context // canceled when Shutdown gives up waiting
	cancel context.CancelFunc

	mu        sync.Mutex
	exports   map[string]*Export
	order     []string
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	shutdown  bool
	wg        sync.WaitGroup
}

// NewServer returns a server for exports.
func NewServer(exports ...Export) (*Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ctx: ctx, cancel: cancel, exports: map[string]*Export{},
		listeners: map[net.Listener]struct{}{}, conns: map[*serverConn]struct{}{}}
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// AddExport adds an export; new connections can ask for it at once.
func (s *Server) AddExport(e Export) error {
	if e.Backend == nil {
		return fmt.Errorf("nbd export %q: no backend", e.Name)
	}
	if len(e.Name) > maxStringLen || len(e.Description) > maxStringLen {
		return fmt.Errorf("nbd export %q: name or description longer than %d bytes", e.Name, maxStringLen)
	}
	if e.Backend.Size() < 0 {
		return fmt.Errorf("nbd export %q: negative size %d", e.Name, e.Backend.Size())
	}
	if e.MinBlockSize == 0 {
		e.MinBlockSize = 1
	}
	if e.PreferredBlockSize == 0 {
		e.PreferredBlockSize = max(4096, e.MinBlockSize)
	}
	if e.MaxBlockSize == 0 {
		e.MaxBlockSize = DefaultMaxPayload
	}
	switch {
	case e.MinBlockSize > 64<<10 || bits.OnesCount32(e.MinBlockSize) != 1:
		return fmt.Errorf("nbd export %q: minimum block size %d is not a power of two up to 64 KiB", e.Name, e.MinBlockSize)
	case e.PreferredBlockSize < e.MinBlockSize || bits.OnesCount32(e.PreferredBlockSize) != 1:
		return fmt.Errorf("nbd export %q: preferred block size %d is not a power of two at least %d", e.Name, e.PreferredBlockSize, e.MinBlockSize)
	case e.MaxBlockSize < e.MinBlockSize || e.MaxBlockSize%e.MinBlockSize != 0 || e.MaxBlockSize > DefaultMaxPayload:
		return fmt.Errorf("nbd export %q: maximum block size %d is not a multiple of %d up to %d", e.Name, e.MaxBlockSize, e.MinBlockSize, DefaultMaxPayload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.exports[e.Name]; dup {
		return fmt.Errorf("nbd export %q: already exported", e.Name)
	}
	s.exports[e.Name] = &e
	s.order = append(s.order, e.Name)
	return nil
}

// RemoveExport stops offering an export to new clients; connections
// already using it keep it until they disconnect.
func (s *Server) RemoveExport(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.exports, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i:i], s.order[i+1:]...)
			break
		}
	}
}

func (s *Server) export(name string) *Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.exports[name]; ok {
		return e
	}
	if name == "" && len(s.order) == 1 {
		return s.exports[s.order[0]]
	}
	return nil
}

func (s *Server) exportList() []*Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Export, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.exports[n])
	}
	return out
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// Serve accepts connections on l and serves each until Shutdown or until
// ctx is done, which shuts the whole server down gracefully. It returns
// ErrServerClosed after a shutdown, or the listener's error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Shutdown(context.Background()) })
	defer stop()
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.shutdown
			delete(s.listeners, l)
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			return fmt.Errorf("nbd server: accepting on %s: %w", l.Addr(), err)
		}
		sc, ok := s.track(conn)
		if !ok {
			continue
		}
		go func() {
			defer s.wg.Done()
			if err := sc.serve(); err != nil {
				s.logf("nbd server: connection from %s: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}

// ServeConn serves one connection (already accepted or a socketpair) and
// returns when it ends. It returns nil when the client disconnected
// normally.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	sc, ok := s.track(conn)
	if !ok {
		return ErrServerClosed
	}
	defer s.wg.Done()
	stop := context.AfterFunc(ctx, sc.drain)
	defer stop()
	return sc.serve()
}

func (s *Server) track(conn net.Conn) (*serverConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		conn.Close()
		return nil, false
	}
	sc := newServerConn(s, conn)
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	return sc, true
}

func (s *Server) untrack(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

// Shutdown stops accepting connections, stops reading new requests,
// lets the requests in flight finish and their replies go out, and closes
// every connection. If ctx ends first, it cancels what is left, closes
// the connections at once and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.drain()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for sc := range s.conns {
			sc.conn.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
