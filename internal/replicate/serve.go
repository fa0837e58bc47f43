package replicate

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"lifeboat/internal/clock"
	"lifeboat/internal/replica"
)

// ReplicaServer is a target site's replica server as replica serve asks
// for it: where it listens, its replicas' directory, the file of the site
// token sources must present, TLS, and where seed images may be.
type ReplicaServer struct {
	Listen, Dir, TokenFile string
	CertFile, KeyFile      string
	SeedDir                string
}

// Validate checks that the settings go together; the files are read by
// Serve.
func (s ReplicaServer) Validate() error {
	switch {
	case s.Listen == "" || s.Dir == "":
		return invalid("--listen and --dir are required")
	case (s.CertFile == "") != (s.KeyFile == ""):
		return invalid("--cert and --key go together")
	}
	return nil
}

// Serve opens the replicas in s.Dir and serves them until ctx ends. Bad
// settings, an unreadable token file and an address it cannot listen on
// are ErrInvalid.
func (s ReplicaServer) Serve(ctx context.Context, clk clock.Clock, log *slog.Logger) error {
	if err := s.Validate(); err != nil {
		return err
	}
	token, err := ReadSecret(s.TokenFile, "--token-file")
	if err != nil {
		return err
	}
	store, err := replica.Open(s.Dir, clk)
	if err != nil {
		return err
	}
	store.SeedDir = s.SeedDir
	l, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return invalidWrap{fmt.Errorf("--listen: %w", err)}
	}
	log.Info("serving replicas", "listen", l.Addr().String(), "dir", s.Dir, "tls", s.CertFile != "")
	return store.Serve(ctx, l, replica.ServeOptions{Token: token, CertFile: s.CertFile, KeyFile: s.KeyFile, Log: log})
}
