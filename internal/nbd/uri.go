package nbd

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Address is where an NBD export lives, parsed from an NBD URI.
type Address struct {
	// Network is "tcp" or "unix"; Addr is host:port or a socket path.
	Network, Addr string
	// Export is the export name ("" is the server's default export).
	Export string
}

// ParseURI parses an NBD URI as the NBD URI specification writes them:
// nbd://host[:port]/export (port 10809 by default; nbd+tcp is the same) and
// nbd+unix:///export?socket=/path. TLS (nbds...) and vsock are not supported.
func ParseURI(rawURL string) (Address, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Address{}, fmt.Errorf("parsing NBD URI %q: %w", rawURL, err)
	}
	var a Address
	// The export name is the path without its first slash, so
	// nbd://h//x names the export "/x".
	a.Export = strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	for k := range q {
		if k != "socket" {
			return Address{}, fmt.Errorf("NBD URI %q: query parameter %q is not supported", rawURL, k)
		}
	}
	if u.User != nil {
		return Address{}, fmt.Errorf("NBD URI %q: user names are only used with TLS, which is not supported", rawURL)
	}
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		if q.Has("socket") {
			return Address{}, fmt.Errorf("NBD URI %q: socket= needs the nbd+unix scheme", rawURL)
		}
		if u.Hostname() == "" {
			return Address{}, fmt.Errorf("NBD URI %q: no host", rawURL)
		}
		port := u.Port()
		if port == "" {
			port = defaultPort
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(u.Hostname(), port)
	case "nbd+unix":
		if u.Host != "" {
			return Address{}, fmt.Errorf("NBD URI %q: nbd+unix takes no host (nbd+unix:///export?socket=/path)", rawURL)
		}
		a.Network, a.Addr = "unix", q.Get("socket")
		if a.Addr == "" {
			return Address{}, fmt.Errorf("NBD URI %q: nbd+unix needs ?socket=/path", rawURL)
		}
	case "nbds", "nbds+tcp", "nbds+unix":
		return Address{}, fmt.Errorf("NBD URI %q: TLS is not supported", rawURL)
	default:
		return Address{}, fmt.Errorf("NBD URI %q: scheme %q is not nbd, nbd+tcp or nbd+unix", rawURL, u.Scheme)
	}
	if len(a.Export) > maxStringLen {
		return Address{}, fmt.Errorf("NBD URI %q: export name longer than %d bytes", rawURL, maxStringLen)
	}
	return a, nil
}

// String formats the address back as an NBD URI.
func (a Address) String() string {
	path := "/" + a.Export
	if a.Network == "unix" {
		u := url.URL{Scheme: "nbd+unix", Path: path, RawQuery: url.Values{"socket": {a.Addr}}.Encode()}
		return u.String()
	}
	u := url.URL{Scheme: "nbd", Host: a.Addr, Path: path}
	return u.String()
}
