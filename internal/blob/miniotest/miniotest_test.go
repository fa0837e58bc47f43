package miniotest_test

import (
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/blobtest"
	"lifeboat/internal/blob/miniotest"
)

// TestMinIO runs the storage conformance suite against a real MinIO, the
// second S3 implementation vault copies are tested with.
func TestMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := srv.NewBucket(t)
		cfg.Prefix = "vaults/site-b"
		s, err := blob.NewS3(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestRestart keeps the data and the address across Stop and Restart.
func TestRestart(t *testing.T) {
	srv := miniotest.Start(t)
	s, err := blob.NewS3(t.Context(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "config", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := s.Get(t.Context(), "config"); err == nil || blob.IsNotExist(err) {
		t.Fatalf("Get with MinIO stopped = %v, want a connection error", err)
	}
	srv.Restart()
	got, err := blob.NewRetry(s, 5, 100*time.Millisecond).Get(t.Context(), "config")
	if err != nil || string(got) != "kept" {
		t.Fatalf("Get after Restart = %q, %v", got, err)
	}
}
