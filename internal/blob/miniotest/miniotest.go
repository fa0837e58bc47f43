// Package miniotest runs a throwaway MinIO server for tests: a second S3
// implementation beside versitygw (package s3test), single drive, with its
// data in a temporary directory, listening on a free 127.0.0.1 port or, for
// tests of network partitions, inside a network namespace.
//
// Like s3test, Start returns a *Server that failure tests can Stop and
// Restart on the same address with the same data:
//
//	srv := miniotest.Start(t)
//	store, err := blob.NewS3(ctx, srv.Config)
//	...
//	srv.Stop()
//	srv.Restart()
//
// The minio binary is looked up on PATH and then in $(go env GOPATH)/bin;
// install it with (scripts/deps.sh does)
//
//	go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
//
// Without it, Start skips the test, unless CI=true or LIFEBOAT_REQUIRE_S3=1
// is set, in which case it fails the test: CI must not silently skip.
package miniotest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3proc"
)

// Version is the MinIO module version scripts/deps.sh installs.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Server is a running MinIO; see s3proc.Server for what it offers. Its
// DataDir is MinIO's drive, where each object is a directory
// DataDir()/bucket/key.
type Server = s3proc.Server

// Options place the server: on loopback, or in a network namespace.
type Options = s3proc.Options

// minio serves a single drive; its credentials and settings come from the
// environment.
var minio = s3proc.Spec{
	Name:    "minio",
	Install: "go install github.com/minio/minio@" + Version + " (or scripts/deps.sh)",
	Args: func(l s3proc.Launch) []string {
		return []string{"server", "--address", l.Addr, "--quiet", l.DataDir}
	},
	Env: func(l s3proc.Launch) []string {
		return []string{
			"MINIO_ROOT_USER=" + l.AccessKey,
			"MINIO_ROOT_PASSWORD=" + l.SecretKey,
			"MINIO_REGION=" + l.Region,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
		}
	},
	DropEnv:      []string{"MINIO_"},
	HealthPath:   "/minio/health/live",
	StartTimeout: 60 * time.Second,
}

// Start starts a server on 127.0.0.1 for the test and stops it in
// t.Cleanup. The returned server's Config names a new bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a server placed as opts says.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	return s3proc.Start(t, minio, opts)
}

// FindBinary returns the path of minio.
func FindBinary() (string, error) {
	return s3proc.FindBinary(minio.Name, minio.Install)
}

// DialIn returns a dial function whose connections are made from inside
// the network namespace ns (/run/netns/ns); see s3proc.DialIn.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return s3proc.DialIn(ns)
}

// AppendOnly returns cfg with temporary credentials (AssumeRole, signed with
// cfg's root credentials) whose policy lets them list the bucket and read
// and create objects in it, but not delete any: the credentials a host
// that may only back up is given (docs/security.md).
func AppendOnly(t testing.TB, cfg blob.S3Config) blob.S3Config {
	t.Helper()
	return WithPolicy(t, cfg, []string{"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"})
}

// WithPolicy returns cfg with temporary credentials allowed only actions on
// cfg's bucket and its objects.
func WithPolicy(t testing.TB, cfg blob.S3Config, actions []string) blob.S3Config {
	t.Helper()
	quoted, _ := json.Marshal(actions)
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":%s,
		"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}`, quoted, cfg.Bucket, cfg.Bucket)
	sts, err := credentials.NewSTSAssumeRole("http://"+cfg.Endpoint, credentials.STSAssumeRoleOptions{
		AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, Policy: policy, Location: cfg.Region})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := sts.GetWithContext(nil)
	if err != nil {
		t.Fatalf("AssumeRole with policy %s: %v", policy, err)
	}
	cfg.AccessKey, cfg.SecretKey, cfg.SessionToken = creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken
	return cfg
}
