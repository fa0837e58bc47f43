// Package s3test runs a throwaway S3 server for tests: versitygw with its
// posix backend, listening on a free 127.0.0.1 port with its data in a
// temporary directory.
//
// Start returns a *Server rather than a bare blob.S3Config so that failure
// tests can Stop the server (requests then fail with connection errors) and
// Restart it on the same address with the same data:
//
//	srv := s3test.Start(t)
//	store, err := blob.NewS3(ctx, srv.Config)
//	...
//	srv.Stop()
//	// operations on store now fail with transient errors
//	srv.Restart()
//
// The versitygw binary is looked up on PATH and then in $(go env GOPATH)/bin;
// install it with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// Without it, Start skips the test, unless CI=true or LIFEBOAT_REQUIRE_S3=1
// is set, in which case it fails the test: CI must not silently skip.
package s3test

import (
	"testing"
	"time"

	"lifeboat/internal/blob/s3proc"
)

// Server is a running versitygw; see s3proc.Server for what it offers.
type Server = s3proc.Server

// versitygw serves its posix backend with the credentials on its command
// line.
var versitygw = s3proc.Spec{
	Name:    "versitygw",
	Install: "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0",
	Args: func(l s3proc.Launch) []string {
		return []string{
			"--port", l.Addr,
			"--access", l.AccessKey,
			"--secret", l.SecretKey,
			"--region", l.Region,
			"--keep-alive", // like real S3; without it every response closes the connection
			"--quiet",
			"posix", l.DataDir,
		}
	},
	DropEnv:      []string{"VGW_", "ROOT_ACCESS_KEY", "ROOT_SECRET", "LOGFILE=", "WEBHOOK="},
	StartTimeout: 30 * time.Second,
}

// Start starts a server for the test and stops it in t.Cleanup. The
// returned server's Config names a new bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	return s3proc.Start(t, versitygw, s3proc.Options{})
}
