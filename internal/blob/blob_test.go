package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/blobtest"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/directio"
)

func TestMem(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return blob.NewMem() })
}

func newDir(t *testing.T) blob.Store {
	d, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDir(t *testing.T) {
	blobtest.Run(t, newDir)
}

func TestRetry(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return blob.NewRetry(blob.NewMem(), 3, time.Millisecond)
	})
}

func TestFaultsSuite(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return blob.NewFaults(blob.NewMem()) })
}

func TestRetryDir(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return blob.NewRetry(blob.NewFaults(newDir(t)), 3, time.Millisecond)
	})
}

func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := srv.NewBucket(t)
		// Objects outside the store's prefix must stay invisible to it.
		decoys := map[string]string{"": "decoy", "vaults": "testx/decoy", "vaults/test": "decoy/x"}
		for prefix, name := range decoys {
			cfg.Prefix = prefix
			other, err := blob.NewS3(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.Put(t.Context(), name, []byte("decoy")); err != nil {
				t.Fatal(err)
			}
		}
		cfg.Prefix = "vaults/test/store"
		s, err := blob.NewS3(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := s.String(), "s3://"+cfg.Bucket+"/vaults/test/store"; got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		return s
	})
}

func TestS3NoPrefix(t *testing.T) {
	srv := s3test.Start(t)
	s, err := blob.NewS3(t.Context(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "s3://"+srv.Config.Bucket+"/"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := s.Put(t.Context(), "packs/ab/abcdef", []byte("data")); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := s.List(t.Context(), "", func(i blob.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "packs/ab/abcdef" {
		t.Errorf("List = %q, want [packs/ab/abcdef]", names)
	}
}

func TestS3ConfigErrors(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()

	cfg := srv.Config
	cfg.Bucket = "no-such-bucket"
	_, err := blob.NewS3(ctx, cfg)
	if !blob.IsPermanent(err) || blob.IsNotExist(err) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("NewS3 of a missing bucket = %v, want a permanent error naming the bucket", err)
	}

	cfg = srv.Config
	cfg.SecretKey = "wrong-secret"
	_, err = blob.NewS3(ctx, cfg)
	if !blob.IsPermanent(err) || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
		t.Errorf("NewS3 with a wrong secret = %v, want a permanent error that says what to check", err)
	}

	cfg = srv.Config
	cfg.AccessKey = "nobody"
	_, err = blob.NewS3(ctx, cfg)
	if !blob.IsPermanent(err) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("NewS3 with an unknown access key = %v, want a permanent error that says what to check", err)
	}

	// A bucket that disappears after NewS3 makes operations fail
	// permanently, not look like missing objects.
	cfg = srv.NewBucket(t)
	s, err := blob.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Region: cfg.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.RemoveBucket(ctx, cfg.Bucket); err != nil {
		t.Fatal(err)
	}
	checkGone := func(op string, err error) {
		t.Helper()
		if !blob.IsPermanent(err) || blob.IsNotExist(err) || !strings.Contains(err.Error(), cfg.Bucket) {
			t.Errorf("%s in a deleted bucket = %v, want a permanent error naming the bucket", op, err)
		}
	}
	checkGone("Put", s.Put(ctx, "x", []byte("x")))
	_, err = s.Get(ctx, "x")
	checkGone("Get", err)
	_, err = s.GetRange(ctx, "x", 0, 1)
	checkGone("GetRange", err)
	checkGone("List", s.List(ctx, "", func(blob.Info) error { return nil }))
	// Stat is a HEAD request: its 404 has no body to tell a missing bucket
	// from a missing object.
	if _, err := s.Stat(ctx, "x"); err == nil {
		t.Errorf("Stat in a deleted bucket succeeded")
	}
}

func TestS3ServerStopped(t *testing.T) {
	srv := s3test.Start(t)
	s, err := blob.NewS3(t.Context(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "config", []byte("config")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	const bound = 5 * time.Second
	ops := map[string]func(ctx context.Context) error{
		"Put": func(ctx context.Context) error { return s.Put(ctx, "packs/ab/abcdef", []byte("data")) },
		"Get": func(ctx context.Context) error { _, err := s.Get(ctx, "config"); return err },
		"GetRange": func(ctx context.Context) error {
			_, err := s.GetRange(ctx, "config", 1, 2)
			return err
		},
		"Stat":   func(ctx context.Context) error { _, err := s.Stat(ctx, "config"); return err },
		"List":   func(ctx context.Context) error { return s.List(ctx, "", func(blob.Info) error { return nil }) },
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, "config") },
	}
	for name, op := range ops {
		ctx, cancel := context.WithTimeout(t.Context(), bound)
		start := time.Now()
		err := op(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s with the server stopped succeeded", name)
		} else if blob.IsNotExist(err) {
			t.Errorf("%s with the server stopped = %v: an unreachable server is not a missing object", name, err)
		} else if errors.Is(err, blob.ErrPermanent) {
			t.Errorf("%s with the server stopped = %v: want a transient error that a retry may fix", name, err)
		}
		if d := time.Since(start); d > bound+time.Second {
			t.Errorf("%s took %v with the server stopped, want at most about %v", name, d, bound)
		}
	}

	// NewS3 also fails rather than hangs.
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	if _, err := blob.NewS3(ctx, srv.Config); err == nil || errors.Is(err, blob.ErrPermanent) {
		t.Errorf("NewS3 with the server stopped = %v, want a transient error", err)
	}

	// A retrying store gives up when the context ends.
	r := blob.NewRetry(s, 1000, 50*time.Millisecond)
	ctx, cancel = context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r.Get(ctx, "config")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("retrying Get with the server stopped = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("retrying Get took %v past a 500ms deadline", d)
	}

	// After a restart the same store works again, with the data intact.
	srv.Restart()
	got, err := blob.NewRetry(s, 3, 10*time.Millisecond).Get(t.Context(), "config")
	if err != nil || string(got) != "config" {
		t.Errorf("Get after Restart = %q, %v, want %q", got, err, "config")
	}
}

func TestS3Missing(t *testing.T) {
	srv := s3test.Start(t)
	s, err := blob.NewS3(t.Context(), srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(t.Context(), "nothing/here")
	if !blob.IsNotExist(err) || !strings.Contains(err.Error(), "nothing/here") || !strings.Contains(err.Error(), srv.Config.Bucket) {
		t.Errorf("Get of a missing object = %v, want IsNotExist naming the store and the object", err)
	}
}

func TestParseS3URL(t *testing.T) {
	for _, tc := range []struct {
		url, bucket, prefix string
		ok                  bool
	}{
		{"s3://bucket", "bucket", "", true},
		{"s3://bucket/", "bucket", "", true},
		{"s3://bucket/prefix", "bucket", "prefix", true},
		{"s3://bucket/prefix/", "bucket", "prefix", true},
		{"s3://my-bucket.example/a/b/c", "my-bucket.example", "a/b/c", true},
		{"s3://bucket/Backups/Host_1", "bucket", "Backups/Host_1", true},
		{"s3://bucket//prefix", "", "", false},
		{"s3://bucket/a//b", "", "", false},
		{"s3://bucket/a/../b", "", "", false},
		{"s3://bucket/./b", "", "", false},
		{"s3://bucket/a b", "", "", false},
		{"s3://", "", "", false},
		{"s3:///prefix", "", "", false},
		{"s3://Bucket/x", "", "", false},
		{"s3://b/x", "", "", false},
		{"s3://bucket_name/x", "", "", false},
		{"s3://bucket?x=1", "", "", false},
		{"s3://bucket/p#frag", "", "", false},
		{"S3://bucket/p", "", "", false},
		{"https://bucket/p", "", "", false},
		{"bucket/p", "", "", false},
		{"", "", "", false},
	} {
		bucket, prefix, err := blob.ParseS3URL(tc.url)
		if tc.ok {
			if err != nil || bucket != tc.bucket || prefix != tc.prefix {
				t.Errorf("ParseS3URL(%q) = %q, %q, %v, want %q, %q", tc.url, bucket, prefix, err, tc.bucket, tc.prefix)
			}
		} else if err == nil {
			t.Errorf("ParseS3URL(%q) = %q, %q, want an error", tc.url, bucket, prefix)
		}
	}
}

func TestS3ConfigFromEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
	t.Setenv("AWS_REGION", "")
	for _, tc := range []struct {
		endpoint string
		host     string
		insecure bool
		ok       bool
	}{
		{"", "", false, true},
		{"http://127.0.0.1:7070", "127.0.0.1:7070", true, true},
		{"https://s3.example.com", "s3.example.com", false, true},
		{"https://s3.example.com/", "s3.example.com", false, true},
		{"s3.example.com:9000", "s3.example.com:9000", false, true},
		{"[::1]:9000", "[::1]:9000", false, true},
		{"http://[::1]:9000", "[::1]:9000", true, true},
		{"ftp://host", "", false, false},
		{"https://host/path", "", false, false},
		{"https://user:pw@host", "", false, false},
		{"https://", "", false, false},
	} {
		t.Setenv("LIFEBOAT_S3_ENDPOINT", tc.endpoint)
		cfg, err := blob.S3ConfigFromEnv("s3://bucket/vault")
		if !tc.ok {
			if err == nil {
				t.Errorf("endpoint %q: got %+v, want an error", tc.endpoint, cfg)
			}
			continue
		}
		want := blob.S3Config{Endpoint: tc.host, Bucket: "bucket", Prefix: "vault",
			AccessKey: "AKID", SecretKey: "SECRET", Region: "us-east-1", Insecure: tc.insecure}
		if err != nil || cfg != want {
			t.Errorf("endpoint %q: got %+v, %v, want %+v", tc.endpoint, cfg, err, want)
		}
	}

	t.Setenv("LIFEBOAT_S3_ENDPOINT", "")
	t.Setenv("AWS_REGION", "eu-west-1")
	if cfg, err := blob.S3ConfigFromEnv("s3://bucket"); err != nil || cfg.Region != "eu-west-1" {
		t.Errorf("AWS_REGION=eu-west-1: got %+v, %v", cfg, err)
	}
	t.Setenv("LIFEBOAT_S3_CREATE_ONLY", "1")
	if cfg, err := blob.S3ConfigFromEnv("s3://bucket"); err != nil || !cfg.CreateOnly {
		t.Errorf("LIFEBOAT_S3_CREATE_ONLY=1: got %+v, %v", cfg, err)
	}
	t.Setenv("LIFEBOAT_S3_CREATE_ONLY", "yes")
	if _, err := blob.S3ConfigFromEnv("s3://bucket"); err == nil || !strings.Contains(err.Error(), "LIFEBOAT_S3_CREATE_ONLY") {
		t.Errorf("LIFEBOAT_S3_CREATE_ONLY=yes: %v, want an error naming it", err)
	}
	t.Setenv("LIFEBOAT_S3_CREATE_ONLY", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err := blob.S3ConfigFromEnv("s3://bucket"); err == nil || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
		t.Errorf("without a secret key: %v, want an error naming AWS_SECRET_ACCESS_KEY", err)
	}
	if _, err := blob.S3ConfigFromEnv("bucket"); err == nil {
		t.Errorf("S3ConfigFromEnv of a URL without s3:// succeeded")
	}
}

// TestS3PlainHTTP checks that NewS3 refuses plain HTTP to anything but a
// loopback address unless LIFEBOAT_S3_ALLOW_HTTP=1. The refusal comes before
// any connection, so no server is needed; an allowed endpoint gets as far as
// connecting, which fails.
func TestS3PlainHTTP(t *testing.T) {
	closedPort := "127.0.0.1:1" // nothing listens on tcpmux
	for _, tc := range []struct {
		endpoint  string
		insecure  bool
		allowHTTP string
		refused   bool
	}{
		{"s3.example.com", true, "", true},
		{"http://s3.example.com", false, "", true},
		{"http://10.1.2.3:9000", false, "", true},
		{"http://10.1.2.3:9000", false, "0", true},
		{"http://127.0.0.1.example.com:9000", false, "", true},
		{"http://" + closedPort, false, "", false},
		{closedPort, true, "", false},
		{"http://127.9.9.9:1", false, "", false},
		{"http://[::1]:1", false, "", false},
		{"http://localhost:1", false, "", false},
		{"http://10.1.2.3:9000", false, "1", false},
		{"https://" + closedPort, true, "", true}, // contradictory
	} {
		t.Setenv("LIFEBOAT_S3_ALLOW_HTTP", tc.allowHTTP)
		cfg := blob.S3Config{Endpoint: tc.endpoint, Insecure: tc.insecure, Bucket: "bucket",
			AccessKey: "a", SecretKey: "s"}
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := blob.NewS3(ctx, cfg)
		cancel()
		if err == nil {
			t.Errorf("NewS3(%q, insecure=%v) succeeded without a server", tc.endpoint, tc.insecure)
			continue
		}
		// A refusal is permanent and names its cause; any other error
		// comes from trying to connect. (Some sandboxes answer connections
		// to any address, so what that error is varies.)
		refused := errors.Is(err, blob.ErrPermanent) && strings.Contains(err.Error(), "refusing plain HTTP")
		if tc.endpoint == "https://"+closedPort {
			refused = errors.Is(err, blob.ErrPermanent) && strings.Contains(err.Error(), "HTTPS but Insecure")
		} else if refused && !strings.Contains(err.Error(), "LIFEBOAT_S3_ALLOW_HTTP=1") {
			t.Errorf("refusal %v does not say how to allow plain HTTP", err)
		}
		if refused != tc.refused {
			t.Errorf("NewS3(%q, insecure=%v, LIFEBOAT_S3_ALLOW_HTTP=%q) = %v, want refused=%v",
				tc.endpoint, tc.insecure, tc.allowHTTP, err, tc.refused)
		}
	}
}

// TestDirListEscape checks that a listing prefix cannot reach files next to
// the store's directory.
func TestDirListEscape(t *testing.T) {
	parent := t.TempDir()
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(parent, "vault")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := blob.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"../", "../s", "../vault/"} {
		err := d.List(t.Context(), prefix, func(info blob.Info) error {
			t.Errorf("List(%q) reported %q", prefix, info.Name)
			return nil
		})
		if !blob.IsPermanent(err) {
			t.Errorf("List(%q) = %v, want a permanent error", prefix, err)
		}
	}
}

func TestRetryTransient(t *testing.T) {
	ctx := t.Context()
	f := blob.NewFaults(blob.NewMem())
	r := blob.NewRetry(f, 3, time.Millisecond)

	// The first attempt fails, the second stores the object.
	f.FailNth(blob.OpPut, 1, nil)
	if err := r.Put(ctx, "packs/ab/abcdef", []byte("pack")); err != nil {
		t.Fatalf("Put with one transient fault: %v", err)
	}
	if n := f.Calls(blob.OpPut); n != 2 {
		t.Errorf("Put took %d calls, want 2", n)
	}

	// Reads are retried too, GetRange included.
	f.FailNth(blob.OpGet, 1, nil)
	f.FailNth(blob.OpGet, 3, nil)
	if got, err := r.Get(ctx, "packs/ab/abcdef"); err != nil || string(got) != "pack" {
		t.Errorf("Get with a transient fault = %q, %v", got, err)
	}
	if got, err := r.GetRange(ctx, "packs/ab/abcdef", 1, 2); err != nil || string(got) != "ac" {
		t.Errorf("GetRange with a transient fault = %q, %v", got, err)
	}
	if n := f.Calls(blob.OpGet); n != 4 {
		t.Errorf("Get and GetRange took %d calls, want 4", n)
	}

	// Every attempt fails: the last error comes back, with the count.
	f.FailPrefix("packs/", nil)
	before := f.Calls(blob.OpStat)
	_, err := r.Stat(ctx, "packs/ab/abcdef")
	if !errors.Is(err, blob.ErrInjected) || !strings.Contains(err.Error(), "3 attempts") {
		t.Errorf("Stat failing every time = %v, want the injected error after 3 attempts", err)
	}
	if n := f.Calls(blob.OpStat) - before; n != 3 {
		t.Errorf("Stat made %d calls, want 3", n)
	}
	f.Clear()
	if err := r.Delete(ctx, "packs/ab/abcdef"); err != nil {
		t.Errorf("Delete after Clear: %v", err)
	}
}

func TestRetryPermanent(t *testing.T) {
	ctx := t.Context()
	f := blob.NewFaults(blob.NewMem())
	r := blob.NewRetry(f, 5, time.Millisecond)

	f.FailPrefix("", fmt.Errorf("access denied: %w", blob.ErrPermanent))
	if err := r.Put(ctx, "config", []byte("x")); !blob.IsPermanent(err) {
		t.Errorf("Put = %v, want the permanent error", err)
	}
	if n := f.Calls(blob.OpPut); n != 1 {
		t.Errorf("a permanent error was tried %d times, want once", n)
	}
	f.Clear()

	// Missing objects and invalid names are not retried either.
	if _, err := r.Get(ctx, "absent"); !blob.IsNotExist(err) {
		t.Errorf("Get of a missing object = %v", err)
	}
	if err := r.Put(ctx, "Bad Name", nil); err == nil {
		t.Errorf("Put of an invalid name succeeded")
	}
	if n := f.Calls(blob.OpGet) + f.Calls(blob.OpPut); n != 3 {
		t.Errorf("%d calls for three operations that cannot succeed, want 3", n)
	}
}

func TestRetryHonoursContext(t *testing.T) {
	f := blob.NewFaults(blob.NewMem())
	f.FailPrefix("", nil)
	r := blob.NewRetry(f, 10, time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Put(ctx, "config", []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, blob.ErrInjected) {
		t.Errorf("Put = %v, want the deadline and the last error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Put waited %v despite the context's deadline", d)
	}
	if n := f.Calls(blob.OpPut); n != 1 {
		t.Errorf("Put made %d calls, want 1 before the deadline", n)
	}
}

func TestRetryList(t *testing.T) {
	ctx := t.Context()
	f := blob.NewFaults(blob.NewMem())
	for _, name := range []string{"points/a", "points/b", "points/c"} {
		if err := f.Put(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := blob.NewRetry(f, 3, time.Millisecond)

	// The first listing delivers everything and then fails: the retry must
	// not hand fn the same names again.
	f.Add(blob.Fault{Op: blob.OpList, Nth: 1, After: true})
	seen := map[string]int{}
	err := r.List(ctx, "points/", func(info blob.Info) error {
		seen[info.Name]++
		return nil
	})
	if err != nil {
		t.Fatalf("List with a transient fault: %v", err)
	}
	if len(seen) != 3 || seen["points/a"] != 1 || seen["points/b"] != 1 || seen["points/c"] != 1 {
		t.Errorf("fn saw %v, want each of the three names once", seen)
	}
	if n := f.Calls(blob.OpList); n != 2 {
		t.Errorf("List made %d calls, want 2", n)
	}

	// An error from fn is returned at once, never retried.
	stop := errors.New("stop")
	calls := 0
	err = r.List(ctx, "points/", func(blob.Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with fn failing = %v after %d calls, want the error after 1", err, calls)
	}
}

func TestFaults(t *testing.T) {
	ctx := t.Context()
	mem := blob.NewMem()
	f := blob.NewFaults(mem)
	if f.String() != mem.String() {
		t.Errorf("String() = %q, want the wrapped store's %q", f.String(), mem.String())
	}

	// Nth counts matching calls from when the fault is added.
	if err := f.Put(ctx, "a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("503 slow down")
	f.FailNth(blob.OpPut, 2, boom)
	if err := f.Put(ctx, "b", []byte("b")); err != nil {
		t.Errorf("first Put after FailNth(2): %v", err)
	}
	if err := f.Put(ctx, "c", []byte("c")); !errors.Is(err, boom) || !strings.Contains(err.Error(), "c") {
		t.Errorf("second Put after FailNth(2) = %v, want the injected error naming the object", err)
	}
	if _, err := mem.Stat(ctx, "c"); !blob.IsNotExist(err) {
		t.Errorf("a failed Put stored the object: %v", err)
	}
	if err := f.Put(ctx, "d", []byte("d")); err != nil {
		t.Errorf("third Put after FailNth(2): %v", err)
	}

	// A prefix fault fails every operation on matching names only.
	f.FailPrefix("packs/", nil)
	if err := f.Put(ctx, "packs/ab/abcdef", nil); !errors.Is(err, blob.ErrInjected) || blob.IsPermanent(err) {
		t.Errorf("Put under the failing prefix = %v, want the transient ErrInjected", err)
	}
	if _, err := f.Get(ctx, "packs/ab/abcdef"); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("Get under the failing prefix = %v", err)
	}
	if _, err := f.GetRange(ctx, "packs/ab/abcdef", 0, 1); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("GetRange under the failing prefix = %v", err)
	}
	if _, err := f.Stat(ctx, "packs/ab/abcdef"); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("Stat under the failing prefix = %v", err)
	}
	if err := f.Delete(ctx, "packs/ab/abcdef"); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("Delete under the failing prefix = %v", err)
	}
	if err := f.List(ctx, "packs/ab/", func(blob.Info) error { return nil }); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("List under the failing prefix = %v", err)
	}
	if got, err := f.Get(ctx, "a"); err != nil || string(got) != "a" {
		t.Errorf("Get outside the failing prefix = %q, %v", got, err)
	}
	if n := f.Injected(); n != 7 {
		t.Errorf("Injected() = %d, want 7", n)
	}
	f.Clear()
	if err := f.Put(ctx, "packs/ab/abcdef", []byte("pack")); err != nil {
		t.Errorf("Put after Clear: %v", err)
	}

	// After: the operation happens, only its answer is lost.
	f.Add(blob.Fault{Op: blob.OpPut, Prefix: "index/", After: true})
	if err := f.Put(ctx, "index/0001", []byte("index")); !errors.Is(err, blob.ErrInjected) {
		t.Errorf("Put with a lost answer = %v, want ErrInjected", err)
	}
	if got, err := mem.Get(ctx, "index/0001"); err != nil || string(got) != "index" {
		t.Errorf("the Put whose answer was lost did not store the object: %q, %v", got, err)
	}
}

// TestS3FaultsMidUpload runs an upload of several objects through Retry and
// Faults against a real S3 server whose answers fail part way through.
func TestS3FaultsMidUpload(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()
	s3, err := blob.NewS3(ctx, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	f := blob.NewFaults(s3)
	r := blob.NewRetry(f, 4, time.Millisecond)
	f.FailNth(blob.OpPut, 3, nil)                                  // an error before the upload
	f.Add(blob.Fault{Op: blob.OpPut, Nth: 5, After: true})         // a lost answer after it
	f.Add(blob.Fault{Op: blob.OpPut, Prefix: "packs/04/", Nth: 1}) // and one on a prefix
	for i := range 6 {
		name := fmt.Sprintf("packs/%02x/p%d", i, i)
		if err := r.Put(ctx, name, []byte(name)); err != nil {
			t.Fatalf("Put(%s): %v", name, err)
		}
	}
	if n := f.Injected(); n != 3 {
		t.Errorf("%d faults injected, want 3", n)
	}
	got := map[string]bool{}
	if err := s3.List(ctx, "packs/", func(i blob.Info) error { got[i.Name] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Errorf("after the upload the bucket holds %d objects, want 6", len(got))
	}
}

// TestDirLargeObjects puts objects big enough to be written around the
// page cache, from aligned and unaligned memory and with a length that is
// not a multiple of the block size, and reads each back whole and in
// ranges, including across the direct/buffered boundary.
func TestDirLargeObjects(t *testing.T) {
	ctx := context.Background()
	s := newDir(t)
	const n = 3<<20 + 777
	base := directio.Alloc(n + 1)
	for i := range base {
		base[i] = byte(i*7 + i>>12)
	}
	for name, data := range map[string][]byte{
		"packs/aa/aligned":   base[:n],
		"packs/bb/unaligned": base[1 : n+1],
		"packs/cc/exact":     base[:3<<20],
	} {
		if err := s.Put(ctx, name, data); err != nil {
			t.Fatalf("Put %s: %v", name, err)
		}
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get %s: %v, equal %v", name, err, bytes.Equal(got, data))
		}
		tail := int64(len(data)) &^ (directio.Align - 1)
		r, err := s.GetRange(ctx, name, tail-10, int64(len(data))-tail+10)
		if err != nil || !bytes.Equal(r, data[tail-10:]) {
			t.Fatalf("GetRange %s across the aligned end: %v", name, err)
		}
	}
}
