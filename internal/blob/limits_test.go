package blob_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
)

// TestDirOversizedObject: a file in a directory vault larger than its kind
// allows is refused by Get with an error naming it, without reading it
// (the files are sparse: reading them would take their whole size).
func TestDirOversizedObject(t *testing.T) {
	ctx := context.Background()
	s := newDir(t)
	root := s.String()
	for _, name := range []string{"config", "keys/0123", "points/abcd", "index/abcd"} {
		size := blob.MaxSize(name) + 1
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, err = s.Get(ctx, name)
		if !errors.Is(err, blob.ErrTooLarge) || !strings.Contains(err.Error(), name) {
			t.Errorf("Get %s of %d bytes: got %v, want ErrTooLarge naming it", name, size, err)
		}
		// Ranges of it are still exact reads.
		got, err := s.GetRange(ctx, name, size-10, 10)
		if err != nil || len(got) != 10 {
			t.Errorf("GetRange at the end of %s: %d bytes, %v", name, len(got), err)
		}
	}
}

// lyingProxy stands between the S3 client and a real S3 server (versitygw)
// and rewrites the Content-Length of the responses to GETs of one key: no
// real S3 server lies, so this is the one part that is not real. Everything
// else (signatures, listings, the bytes sent) is versitygw's.
type lyingProxy struct {
	mu     sync.Mutex
	key    string // path suffix of the object to lie about
	length string // Content-Length to announce
}

func (l *lyingProxy) lie(key, length string) {
	l.mu.Lock()
	l.key, l.length = key, length
	l.mu.Unlock()
}

func startLyingProxy(t *testing.T, cfg blob.S3Config) (*lyingProxy, blob.S3Config) {
	target, err := url.Parse("http://" + cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	l := &lyingProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the client signed the proxy's address
		},
		ModifyResponse: func(resp *http.Response) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.key != "" && resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, l.key) {
				resp.Header.Set("Content-Length", l.length)
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	proxied := cfg
	proxied.Endpoint = strings.TrimPrefix(srv.URL, "http://")
	return l, proxied
}

// TestS3LyingContentLength: a server that announces more (or fewer) bytes
// than the object has neither panics lifeboat nor makes it allocate what
// was announced: whole objects are refused over their kind's cap, ranges
// that are not exactly the length asked are refused, each error naming the
// object.
func TestS3LyingContentLength(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	real, err := blob.NewS3(ctx, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	point := bytes.Repeat([]byte("p"), 100)
	pack := bytes.Repeat([]byte("k"), 4096)
	for name, data := range map[string][]byte{"points/aa": point, "packs/bb/cc": pack} {
		if err := real.Put(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	l, cfg := startLyingProxy(t, srv.Config)
	s, err := blob.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Honest first: the proxy itself changes nothing.
	if got, err := s.Get(ctx, "points/aa"); err != nil || !bytes.Equal(got, point) {
		t.Fatalf("Get through the proxy: %v", err)
	}
	if got, err := s.GetRange(ctx, "packs/bb/cc", 100, 200); err != nil || !bytes.Equal(got, pack[100:300]) {
		t.Fatalf("GetRange through the proxy: %v", err)
	}

	for _, tc := range []struct {
		name, length string
		get          func() ([]byte, error)
		want         error
	}{
		{"points/aa", strconv.FormatInt(1<<62, 10), func() ([]byte, error) { return s.Get(ctx, "points/aa") }, blob.ErrTooLarge},
		{"points/aa", strconv.FormatInt(20<<30, 10), func() ([]byte, error) { return s.Get(ctx, "points/aa") }, blob.ErrTooLarge},
		{"packs/bb/cc", strconv.FormatInt(1<<62, 10), func() ([]byte, error) { return s.Get(ctx, "packs/bb/cc") }, blob.ErrTooLarge},
		{"packs/bb/cc", strconv.FormatInt(1<<62, 10), func() ([]byte, error) { return s.GetRange(ctx, "packs/bb/cc", 100, 200) }, blob.ErrPermanent},
		{"packs/bb/cc", "201", func() ([]byte, error) { return s.GetRange(ctx, "packs/bb/cc", 100, 200) }, blob.ErrPermanent},
		// Fewer announced than sent: Go's HTTP server cuts the response,
		// so any error naming the object will do.
		{"packs/bb/cc", "199", func() ([]byte, error) { return s.GetRange(ctx, "packs/bb/cc", 100, 200) }, nil},
	} {
		l.lie(tc.name, tc.length)
		data, err := tc.get()
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s announced as %s bytes: got %d bytes, %v; want %v naming it", tc.name, tc.length, len(data), err, tc.want)
		}
	}
	l.lie("", "")
	if got, err := s.GetRange(ctx, "packs/bb/cc", 100, 200); err != nil || !bytes.Equal(got, pack[100:300]) {
		t.Fatalf("GetRange after the lies: %v", err)
	}
}
