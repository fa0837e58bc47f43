package replicate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"lifeboat/internal/journal"
	"lifeboat/internal/nbd"
)

// receiver is the NBD server QEMU's mirror writes into: one export per
// disk ("0", "1", ...), each write appended to the source journal before
// it is acknowledged, so the guest waits for the local journal only,
// never for the WAN.
type receiver struct {
	j    *journal.Journal
	gate *writeGate // held while a group cut is taken (groupmirror.go)
	srv  *nbd.Server
	ln   net.Listener
	sock string
	// dropped is set once a connection of QEMU's ended while the
	// receiver served: the mirror's node was deleted (a live backup took
	// the disks over) or QEMU stopped, so writes are no longer journaled.
	dropped, closing atomic.Bool
}

// startReceiver serves sizes' disks on a unix socket at sock.
func startReceiver(j *journal.Journal, sock string, sizes []int64) (*receiver, error) {
	var exports []nbd.Export
	gate := &writeGate{}
	for i, size := range sizes {
		exports = append(exports, nbd.Export{Name: strconv.Itoa(i), Backend: &journalDisk{j: j, gate: gate, disk: i, size: size}})
	}
	srv, err := nbd.NewServer(exports...)
	if err != nil {
		return nil, err
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("starting the mirror's receiver: %w", err)
	}
	rc := &receiver{j: j, gate: gate, srv: srv, ln: ln, sock: sock}
	go srv.Serve(context.Background(), watchListener{ln, rc})
	return rc, nil
}

// Dropped tells whether QEMU dropped a connection to the receiver: no
// write is journaled after that.
func (rc *receiver) Dropped() bool { return rc.dropped.Load() }

// watchListener notes in its receiver when a connection it accepted ends.
type watchListener struct {
	net.Listener
	rc *receiver
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchConn{Conn: c, rc: l.rc}, nil
}

type watchConn struct {
	net.Conn
	rc *receiver
}

func (c *watchConn) Close() error {
	if !c.rc.closing.Load() {
		c.rc.dropped.Store(true)
	}
	return c.Conn.Close()
}

// Close drops QEMU's connections (a mirror still writing fails) and stops
// serving.
func (rc *receiver) Close() {
	rc.closing.Store(true)
	rc.gate.release() // writes held for a group cut fail rather than wait
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: connections are cut at once
	rc.srv.Shutdown(ctx)
	rc.ln.Close()
	os.Remove(rc.sock)
}

// errTrim: a discard cannot be journaled faithfully (what the source reads
// back after it depends on its format and options), so it fails the mirror
// and the discarded range is sent from the dirty bitmap.
var errTrim = errors.New("the source journal does not take discards: falling back to bitmap cuts")

// errNoRead: the mirror never reads its target (sync none).
var errNoRead = errors.New("the mirror's receiver cannot be read")

// journalDisk is one disk of the receiver: an nbd.Backend whose writes
// go to the journal.
type journalDisk struct {
	j    *journal.Journal
	gate *writeGate
	disk int
	size int64
}

func (d *journalDisk) Size() int64 { return d.size }

func (d *journalDisk) ReadAt(p []byte, off int64) (int, error) { return 0, errNoRead }

func (d *journalDisk) WriteAt(p []byte, off int64) (int, error) {
	d.gate.enter()
	defer d.gate.leave()
	if _, err := d.j.Append(journal.KindData, d.disk, off, 0, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *journalDisk) Flush(ctx context.Context) error { return d.j.Sync() }

func (d *journalDisk) Trim(ctx context.Context, off, length int64) error { return errTrim }

func (d *journalDisk) WriteZeroes(ctx context.Context, off, length int64, noHole bool) error {
	d.gate.enter()
	defer d.gate.leave()
	_, err := d.j.Append(journal.KindZero, d.disk, off, length, nil)
	return err
}
