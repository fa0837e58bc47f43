// Package listen opens the TCP listeners lifeboat's servers answer on
// (the control plane's API, vault serve): plain, or TLS from a
// certificate and key file.
package listen

import (
	"crypto/tls"
	"fmt"
	"net"
)

// TCP listens on addr. With certFile (and keyFile) the listener serves TLS
// 1.2 or later with that certificate. It returns the URL scheme to reach
// it by: http or https.
func TCP(addr, certFile, keyFile string) (net.Listener, string, error) {
	var cert tls.Certificate
	if certFile != "" {
		var err error
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, "", fmt.Errorf("loading the TLS certificate: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listening on %s: %w", addr, err)
	}
	if certFile == "" {
		return ln, "http", nil
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), "https", nil
}
