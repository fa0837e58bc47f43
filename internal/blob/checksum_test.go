package blob_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
	"lifeboat/internal/blob/s3proc"
	"lifeboat/internal/blob/s3test"
)

// TestS3PutBodyChecked sends puts through a proxy that flips one byte of
// every PUT body on the way, after the request was signed: both servers
// must refuse the body (the checksum header, x-amz-checksum-crc32c or
// Content-MD5 for retention puts, no longer matches), no object may
// appear, and the same put without the flip must succeed.
func TestS3PutBodyChecked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *s3proc.Server
	}{
		{"versitygw", func(t testing.TB) *s3proc.Server { return s3test.Start(t) }},
		{"minio", func(t testing.TB) *s3proc.Server { return miniotest.Start(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.start(t)
			cfg := srv.NewBucket(t)
			target, err := url.Parse("http://" + strings.TrimPrefix(strings.TrimPrefix(cfg.Endpoint, "http://"), "https://"))
			if err != nil {
				t.Fatal(err)
			}
			var flip, flipped atomic.Bool
			proxy := httputil.NewSingleHostReverseProxy(target)
			inner := proxy.Director
			proxy.Director = func(r *http.Request) {
				inner(r)
				if r.Method != http.MethodPut || !flip.Load() || r.Body == nil {
					return
				}
				body, err := io.ReadAll(r.Body)
				if err != nil || len(body) == 0 {
					return
				}
				body[len(body)/2] ^= 0x40
				flipped.Store(true)
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			front := httptest.NewServer(proxy)
			defer front.Close()
			cfg.Endpoint = strings.TrimPrefix(front.URL, "http://")
			cfg.Insecure = true
			cfg.RetryBudget = 1 // one try: a refused body is not retried into success
			s, err := blob.NewS3(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("lifeboat checksum "), 4096)

			flip.Store(true)
			err = s.Put(t.Context(), "packs/ab/flipped", data)
			if !flipped.Load() {
				t.Fatal("the proxy saw no PUT body to flip")
			}
			if err == nil {
				t.Fatal("a PUT whose body was changed after signing was accepted")
			}
			if _, err := s.Get(t.Context(), "packs/ab/flipped"); !blob.IsNotExist(err) {
				t.Fatalf("after a refused PUT, Get = %v, want ErrNotExist", err)
			}

			flip.Store(false)
			if err := s.Put(t.Context(), "packs/ab/flipped", data); err != nil {
				t.Fatalf("the same PUT unchanged: %v", err)
			}
			got, err := s.Get(t.Context(), "packs/ab/flipped")
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get after PUT: %d bytes, %v", len(got), err)
			}
		})
	}
}
