package nbd

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ParseListen parses where an NBD server listens, as lifeboat's commands
// write it: unix:PATH (a new socket file) or HOST:PORT.
func ParseListen(s string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return "", "", errors.New("unix: needs a socket path (unix:/run/lifeboat/web1.sock)")
		}
		return "unix", path, nil
	}
	if s == "" {
		return "", "", errors.New("give where to listen: unix:PATH or HOST:PORT")
	}
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		return "", "", fmt.Errorf("%q is neither unix:PATH nor HOST:PORT", s)
	}
	return "tcp", s, nil
}

// ListenURI is the NBD URI of export name served at a listener's address
// (network and addr as ParseListen gives them), the socket path written as
// it is, as qemu and libnbd print it: export names that are lifeboat disk
// names need no escaping.
func ListenURI(network, addr, name string) string {
	if network == "unix" {
		return "nbd+unix:///" + name + "?socket=" + addr
	}
	return "nbd://" + addr + "/" + name
}
