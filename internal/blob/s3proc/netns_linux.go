package s3proc

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialIn returns a dial function whose connections are made from inside
// the network namespace ns (/run/netns/ns): the socket is created on a
// thread that joins the namespace for the dial and then returns to its
// own. The connection stays in the namespace.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			c, back, err := dialFrom(ctx, ns, network, addr)
			// A thread that could not return to its namespace stays locked,
			// and the runtime ends it with this goroutine. Threads must not
			// end otherwise: a child started with Pdeathsig from a thread
			// dies with that thread.
			if back {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// dialFrom dials from namespace ns on the current, locked thread, and
// reports whether the thread is back in its own namespace.
func dialFrom(ctx context.Context, ns, network, addr string) (c net.Conn, back bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer unix.Close(orig)
	fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("opening network namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("entering network namespace %s: %w", ns, err)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	return c, unix.Setns(orig, unix.CLONE_NEWNET) == nil, err
}
