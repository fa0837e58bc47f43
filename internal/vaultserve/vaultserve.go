// Package vaultserve serves a directory vault over HTTP(S) to the hosts
// that back up into it (`lifeboat vault serve`), in the protocol blob.Remote
// speaks. With AppendOnly, the endpoint only creates: a delete is refused
// (403) and so is a write to a name that exists with other bytes (409),
// so a host holding its token can add recovery points but never remove or
// alter one. Forget and prune then run on the vault's host, against the
// directory itself (docs/security.md, "Append-only credentials").
package vaultserve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/listen"
)

// ErrConfig marks a configuration the server refuses to start with.
var ErrConfig = errors.New("invalid vault serve configuration")

// configError is a configuration refused with a message that stands
// alone; it is ErrConfig.
type configError string

func (e configError) Error() string        { return string(e) }
func (e configError) Is(target error) bool { return target == ErrConfig }

// MinToken is the shortest token accepted.
const MinToken = 16

// Handler serves store under the token; see blob.Remote for the protocol.
func Handler(store *blob.Dir, token string, appendOnly bool, log *slog.Logger) http.Handler {
	h := &handler{store: store, token: sha256.Sum256([]byte(token)), appendOnly: appendOnly, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/objects/", h.object)
	mux.HandleFunc("GET /v1/list", h.list)
	return h.auth(mux)
}

type handler struct {
	store      *blob.Dir
	token      [32]byte
	appendOnly bool
	log        *slog.Logger
}

func (h *handler) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], h.token[:]) != 1 {
			http.Error(w, "missing or wrong token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fail answers with the status that tells the client what err is.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case blob.IsNotExist(err):
		status = http.StatusNotFound
	case errors.Is(err, blob.ErrOutOfRange):
		status = http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, blob.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, blob.ErrPermanent):
		status = http.StatusBadRequest
	}
	if status == http.StatusInternalServerError {
		h.log.Warn("vault serve: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	http.Error(w, err.Error(), status)
}

func (h *handler) object(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/objects/")
	if err := blob.ValidName(name); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		h.get(w, r, name)
	case http.MethodHead:
		info, err := h.store.Stat(ctx, name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	case http.MethodPut:
		h.put(w, r, name)
	case http.MethodDelete:
		if h.appendOnly {
			http.Error(w, "this endpoint is append-only (vault serve --append-only): deletes are refused; "+
				"forget and prune run with the vault directory itself", http.StatusForbidden)
			return
		}
		if err := h.store.Delete(ctx, name); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	rng := r.Header.Get("Range")
	if rng == "" {
		data, err := h.store.Get(ctx, name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
		return
	}
	from, to, ok := parseRange(rng)
	if !ok {
		http.Error(w, fmt.Sprintf("unsupported range %q: want bytes=A-B", rng), http.StatusBadRequest)
		return
	}
	data, err := h.store.GetRange(ctx, name, from, to-from+1)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", from, to))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(data)
}

// parseRange reads "bytes=A-B" with 0 <= A <= B, and B-A+1 (the length)
// an int64.
func parseRange(s string) (from, to int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	a, b, found2 := strings.Cut(spec, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	from, err1 := strconv.ParseInt(a, 10, 64)
	to, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || from < 0 || to < from || to-from == 1<<63-1 {
		return 0, 0, false
	}
	return from, to, true
}

func (h *handler) put(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	if r.ContentLength < 0 {
		http.Error(w, "a PUT needs a Content-Length", http.StatusLengthRequired)
		return
	}
	if r.ContentLength > blob.MaxSize(name) {
		http.Error(w, fmt.Sprintf("%s: %d bytes is more than an object of its kind may have", name, r.ContentLength), http.StatusRequestEntityTooLarge)
		return
	}
	data := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, data); err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !h.appendOnly {
		if err := h.store.Put(ctx, name, data); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusCreated)
		return
	}
	err := h.store.Create(ctx, name, data)
	if err == nil {
		w.WriteHeader(http.StatusCreated)
		return
	}
	if !errors.Is(err, blob.ErrExists) {
		h.fail(w, r, err)
		return
	}
	// lifeboat stores some names again with the same bytes (a pack or an
	// index object named by its hash): that is no change.
	old, err := h.store.Get(ctx, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !bytes.Equal(old, data) {
		http.Error(w, name+" exists with other content, and this endpoint is append-only (vault serve --append-only): overwrites are refused",
			http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var buf bytes.Buffer
	started := false
	err := h.store.List(r.Context(), prefix, func(i blob.Info) error {
		fmt.Fprintf(&buf, "%d %s\n", i.Size, i.Name)
		if buf.Len() >= 64<<10 {
			started = true
			if _, err := w.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
		return nil
	})
	if err != nil {
		if !started {
			h.fail(w, r, err)
		}
		return // a listing cut short has no final ".": the client notices
	}
	buf.WriteString(".\n")
	w.Write(buf.Bytes())
}

// Config is what `lifeboat vault serve` runs with.
type Config struct {
	Dir    string // the vault's directory, which must exist
	Listen string // host:port
	Token  string // at least MinToken characters
	// TokenFile holds the token (surrounding white space trimmed): read
	// when Token is empty, and then needed, as Dir is.
	TokenFile  string
	AppendOnly bool
	// TLSCert and TLSKey serve HTTPS; without them plain HTTP is served
	// on loopback only, unless InsecureListen.
	TLSCert, TLSKey string
	InsecureListen  bool
	Log             *slog.Logger
	// Ready, if set, is called with the address listened on.
	Ready func(url string)
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Token == "" {
		if cfg.Dir == "" || cfg.TokenFile == "" {
			return configError("vault serve needs --dir and --token-file")
		}
		tok, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return configError(fmt.Sprintf("--token-file: %v", err))
		}
		cfg.Token = strings.TrimSpace(string(tok))
	}
	if len(cfg.Token) < MinToken {
		return fmt.Errorf("%w: the token must have at least %d characters", ErrConfig, MinToken)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return fmt.Errorf("%w: give both --tls-cert and --tls-key, or neither", ErrConfig)
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", ErrConfig, cfg.Listen, err)
	}
	if cfg.TLSCert == "" && !cfg.InsecureListen && !blob.IsLoopback(host) {
		return fmt.Errorf("%w: --listen %s is not a loopback address: serve TLS (--tls-cert, --tls-key) or say --insecure-listen; "+
			"the token and the vault's (encrypted) objects would cross the network in clear", ErrConfig, cfg.Listen)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	store, err := blob.NewDir(cfg.Dir)
	if err != nil {
		return err
	}
	ln, scheme, err := listen.TCP(cfg.Listen, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: Handler(store, cfg.Token, cfg.AppendOnly, cfg.Log), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := scheme + "://" + ln.Addr().String()
	cfg.Log.Info("vault serve started", "url", url, "dir", store.String(), "append_only", cfg.AppendOnly)
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	return nil
}
