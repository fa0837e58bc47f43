package blob

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Remote is a Store served over HTTP(S) by `lifeboat vault serve`
// (internal/vaultserve): a directory vault on another machine, reached
// with a bearer token. An append-only endpoint refuses deletes and
// overwrites (403 and 409), which Remote reports as permanent refusals.
//
// The protocol, version 1, under the endpoint's URL:
//
//	GET    /v1/objects/NAME   the object; with "Range: bytes=A-B", exactly those bytes (206)
//	HEAD   /v1/objects/NAME   its size in Content-Length
//	PUT    /v1/objects/NAME   store it (201; 200 if it exists with the same bytes)
//	DELETE /v1/objects/NAME   remove it (204; a missing object too)
//	GET    /v1/list?prefix=P  "SIZE NAME\n" for every object whose name starts with P, then ".\n"
//
// Every request carries "Authorization: Bearer TOKEN". Errors are 4xx or
// 5xx with a one-line text body: 404 no such object, 401 bad token, 403
// refused (append-only), 409 exists with other bytes, 413 over the size
// cap, 416 range past the end, 400 bad name.
type Remote struct {
	base   string // "http(s)://host:port", no trailing slash
	token  string
	client *http.Client
}

// RemoteConfig locates a served vault.
type RemoteConfig struct {
	// URL is "http://host:port" or "https://host:port". Plain HTTP is
	// allowed to loopback only, unless LIFEBOAT_S3_ALLOW_HTTP=1.
	URL string
	// Token is the endpoint's bearer token.
	Token string
	// StallTimeout is as in S3Config; 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	// Transport, if set, replaces the default (tests: a private CA).
	Transport *http.Transport
}

// NewRemote checks the endpoint's URL and the token by listing one prefix.
func NewRemote(ctx context.Context, cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("vault endpoint %q: want http(s)://host:port: %w", cfg.URL, ErrPermanent)
	}
	if u.Scheme == "http" {
		if err := checkPlainHTTP(u.Host); err != nil {
			return nil, err
		}
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("vault endpoint %s: no token: set LIFEBOAT_VAULT_TOKEN_FILE (or LIFEBOAT_VAULT_TOKEN): %w", cfg.URL, ErrPermanent)
	}
	stall := cfg.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.DialContext = stallDialer(stall)
	tr.ResponseHeaderTimeout = stall
	r := &Remote{base: u.Scheme + "://" + u.Host, token: cfg.Token, client: &http.Client{Transport: tr}}
	if err := r.List(ctx, "keys/", func(Info) error { return nil }); err != nil {
		return nil, err
	}
	return r, nil
}

// OpenRemote is NewRemote behind the Retry wrapper with DefaultRetry.
func OpenRemote(ctx context.Context, cfg RemoteConfig) (Store, error) {
	r, err := NewRemote(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return NewRetryPolicy(r, DefaultRetry), nil
}

func (r *Remote) String() string { return r.base }

func (r *Remote) do(ctx context.Context, method, path string, body []byte, header http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w: %w", r, method, path, err, ErrPermanent)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", r, method, path, err)
	}
	return resp, nil
}

// failure turns an error response into one of the package's errors.
func (r *Remote) failure(resp *http.Response, op, name string) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	what := fmt.Sprintf("%s: %s %s: %s", r, op, name, strings.TrimSpace(string(msg)))
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %w", what, ErrNotExist)
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: check the endpoint's token (LIFEBOAT_VAULT_TOKEN_FILE): %w", what, ErrPermanent)
	case http.StatusForbidden, http.StatusConflict:
		return fmt.Errorf("%s: %w", what, ErrPermanent)
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%s: %w: %w", what, ErrTooLarge, ErrPermanent)
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s: %w", what, ErrOutOfRange)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return fmt.Errorf("%s (%s): %w", what, resp.Status, ErrPermanent)
	}
	return fmt.Errorf("%s (%s)", what, resp.Status)
}

func objectPath(name string) string { return "/v1/objects/" + name }

func (r *Remote) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(r, name, int64(len(data))); err != nil {
		return err
	}
	resp, err := r.do(ctx, http.MethodPut, objectPath(name), data, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return r.failure(resp, "put", name)
	}
	return nil
}

func (r *Remote) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	resp, err := r.do(ctx, http.MethodGet, objectPath(name), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, r.failure(resp, "get", name)
	}
	data, err := readCapped(r, name, resp.Body, resp.ContentLength)
	if err != nil && !errors.Is(err, ErrTooLarge) {
		err = fmt.Errorf("%s: get %s: reading the response: %w", r, name, err)
	}
	return data, err
}

func (r *Remote) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	if done, data, err := checkRange(ctx, r, name, offset, length); done {
		return data, err
	}
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)}}
	resp, err := r.do(ctx, http.MethodGet, objectPath(name), nil, h)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return nil, r.failure(resp, "get range of", name)
	}
	if resp.ContentLength != length {
		sentinel := ErrOutOfRange
		if resp.ContentLength > length {
			sentinel = ErrTooLarge
		}
		return nil, fmt.Errorf("%s: get range of %s: asked for %d bytes at %d, the response has %d: %w: %w",
			r, name, length, offset, resp.ContentLength, sentinel, ErrPermanent)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(resp.Body, data); err != nil {
		return nil, fmt.Errorf("%s: get range of %s: reading the response: %w", r, name, err)
	}
	return data, nil
}

func (r *Remote) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	resp, err := r.do(ctx, http.MethodHead, objectPath(name), nil, nil)
	if err != nil {
		return Info{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Info{}, r.failure(resp, "stat", name)
	}
	return Info{Name: name, Size: resp.ContentLength}, nil
}

func (r *Remote) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("%s: listing: %w", r, err)
	}
	resp, err := r.do(ctx, http.MethodGet, "/v1/list?prefix="+url.QueryEscape(prefix), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r.failure(resp, "list", prefix)
	}
	var fnErr error
	complete, err := readListing(resp.Body, prefix, func(i Info) error { fnErr = fn(i); return fnErr })
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("%s: list %s: %w", r, prefix, err)
	}
	if !complete {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: list %s: %w", r, prefix, err)
		}
		return fmt.Errorf("%s: list %s: the listing was cut short", r, prefix)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: list %s: %w", r, prefix, err)
	}
	return nil
}

// readListing reads a listing's body, "SIZE NAME\n" for each object, calling
// fn for each. The listing ends with a line "." so that one cut short is
// told from a complete one: complete says whether it came.
func readListing(body io.Reader, prefix string, fn func(Info) error) (complete bool, err error) {
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		if sc.Text() == "." {
			return true, nil
		}
		size, name, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if !ok || err != nil || n < 0 || ValidName(name) != nil || !strings.HasPrefix(name, prefix) {
			return false, fmt.Errorf("bad line %q: %w", sc.Text(), ErrPermanent)
		}
		if err := fn(Info{Name: name, Size: n}); err != nil {
			return false, err
		}
	}
	return false, sc.Err()
}

func (r *Remote) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	resp, err := r.do(ctx, http.MethodDelete, objectPath(name), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotFound {
		return r.failure(resp, "delete", name)
	}
	return nil
}
