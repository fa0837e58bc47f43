package nbd

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, c := range []struct {
		uri                   string
		network, addr, export string
		err                   string
	}{
		{uri: "nbd://example.com/disk", network: "tcp", addr: "example.com:10809", export: "disk"},
		{uri: "nbd://127.0.0.1:1234/", network: "tcp", addr: "127.0.0.1:1234", export: ""},
		{uri: "nbd://[::1]:99", network: "tcp", addr: "[::1]:99", export: ""},
		{uri: "nbd+tcp://h//abs", network: "tcp", addr: "h:10809", export: "/abs"},
		{uri: "nbd://h/with%20space", network: "tcp", addr: "h:10809", export: "with space"},
		{uri: "nbd+unix:///e?socket=/run/n.sock", network: "unix", addr: "/run/n.sock", export: "e"},
		{uri: "nbd+unix:///?socket=/s", network: "unix", addr: "/s", export: ""},
		{uri: "nbd+unix:///e", err: "needs ?socket="},
		{uri: "nbd+unix://host/e?socket=/s", err: "takes no host"},
		{uri: "nbd://h/e?socket=/s", err: "needs the nbd+unix scheme"},
		{uri: "nbds://h/e", err: "TLS"},
		{uri: "nbd:///e", err: "no host"},
		{uri: "nbd://h/e?tls-certificates=/x", err: "not supported"},
		{uri: "http://h/e", err: "scheme"},
	} {
		a, err := ParseURI(c.uri)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseURI(%q) = %+v, %v; want an error with %q", c.uri, a, err, c.err)
			}
			continue
		}
		if err != nil || a.Network != c.network || a.Addr != c.addr || a.Export != c.export {
			t.Errorf("ParseURI(%q) = %+v, %v; want %s %s %q", c.uri, a, err, c.network, c.addr, c.export)
			continue
		}
		// String gives a URI that parses back to the same address.
		if b, err := ParseURI(a.String()); err != nil || b != a {
			t.Errorf("ParseURI(%q.String() = %q) = %+v, %v", c.uri, a.String(), b, err)
		}
	}
}
