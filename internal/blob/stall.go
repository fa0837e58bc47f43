package blob

import (
	"context"
	"net"
	"time"
)

// DefaultStallTimeout is how long an S3 connection may move no byte, in
// either direction, before its request fails. It matches the time minio-go
// allows a server to start its response.
const DefaultStallTimeout = time.Minute

// stallDialer returns a dial function whose connections fail a Read or
// Write that makes no progress within timeout, and that gives up
// connecting after timeout (at most 30 seconds).
func stallDialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: min(timeout, 30*time.Second), KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: c, timeout: timeout}, nil
	}
}

// stallConn sets a fresh deadline before every Read and Write: a transfer
// may take as long as it needs while bytes flow, but not a moment more
// than timeout once they stop. A Write also renews the read deadline: the
// HTTP transport keeps a Read pending on every connection, idle ones
// included, and the answer to what is written now must get its full time.
// An idle pooled connection whose read times out is simply dropped by the
// transport.
type stallConn struct {
	net.Conn
	timeout time.Duration
}

func (c *stallConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *stallConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
