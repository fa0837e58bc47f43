//go:build !linux

package s3proc

import (
	"context"
	"fmt"
	"net"
)

// DialIn returns a dial function that fails: network namespaces are
// Linux's.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, fmt.Errorf("dialing %s in network namespace %s: namespaces need Linux", addr, ns)
	}
}
