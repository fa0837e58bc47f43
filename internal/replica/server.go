package replica

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// ServeOptions configure a target site's replica server.
type ServeOptions struct {
	// Token is the site token every request must carry (Bearer).
	Token string
	// CertFile and KeyFile serve HTTPS; without them the server speaks
	// plain HTTP, which sources accept only on loopback addresses.
	CertFile, KeyFile string
	// FoldEvery is how often history older than the retention is folded
	// into the base images, and checkpoints made (default 10 s).
	FoldEvery time.Duration
	Log       *slog.Logger
}

// Serve serves the store's HTTP API on l until ctx ends. The API is in
// docs/replication.md.
func (s *Store) Serve(ctx context.Context, l net.Listener, opts ServeOptions) error {
	if opts.Token == "" {
		return fmt.Errorf("%w: the replica server needs a site token", ErrInvalid)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.FoldEvery <= 0 {
		opts.FoldEvery = 10 * time.Second
	}
	srv := &http.Server{Handler: s.Handler(opts.Token, opts.Log), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn)}
	go func() {
		t := time.NewTicker(opts.FoldEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				srv.Shutdown(context.Background())
				return
			case <-t.C:
				s.foldAll(ctx, opts.Log)
			}
		}
	}()
	var err error
	if opts.CertFile != "" {
		err = srv.ServeTLS(l, opts.CertFile, opts.KeyFile)
	} else {
		err = srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Store) foldAll(ctx context.Context, log *slog.Logger) {
	if n, err := s.ExpireHolds(ctx); err != nil {
		log.Error("expiring holds", "err", err)
	} else if n > 0 {
		log.Warn("removed holds older than the limit (their readers are gone)", "holds", n, "limit", HoldMaxAge)
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.machines))
	for n := range s.machines {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		if k, err := s.Fold(ctx, n); err != nil {
			log.Error("folding history", "machine", n, "err", err)
		} else if k > 0 {
			log.Info("folded history into the base", "machine", n, "batches", k)
		}
		if k, err := s.Checkpoint(ctx, n); err != nil {
			log.Error("making checkpoints", "machine", n, "err", err)
		} else if k > 0 {
			log.Info("made checkpoints of the history", "machine", n, "checkpoints", k)
		}
	}
}

// Handler is the replica API, behind the site token.
func (s *Store) Handler(token string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/replicas/{machine}", func(w http.ResponseWriter, r *http.Request) {
		var spec Spec
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&spec); err != nil {
			writeError(w, fmt.Errorf("%w: %v", ErrInvalid, err))
			return
		}
		if spec.Machine != r.PathValue("machine") {
			writeError(w, fmt.Errorf("%w: spec for %q sent to %q", ErrInvalid, spec.Machine, r.PathValue("machine")))
			return
		}
		if err := s.Register(r.Context(), spec); err != nil {
			writeError(w, err)
			return
		}
		s.respondStatus(w, r)
	})
	mux.HandleFunc("GET /v1/replicas/{machine}", s.respondStatus)
	mux.HandleFunc("DELETE /v1/replicas/{machine}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Remove(r.Context(), r.PathValue("machine")); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/replicas/{machine}/batches/{seq}", func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil || seq == 0 {
			writeError(w, fmt.Errorf("%w: batch number %q", ErrInvalid, r.PathValue("seq")))
			return
		}
		var body io.Reader = r.Body
		switch r.Header.Get("Content-Encoding") {
		case "", "identity":
		case "zstd":
			dec, err := zstd.NewReader(r.Body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				writeError(w, err)
				return
			}
			defer dec.Close()
			body = dec
		default:
			writeError(w, fmt.Errorf("%w: content encoding %q: want zstd or none", ErrInvalid, r.Header.Get("Content-Encoding")))
			return
		}
		if err := s.Receive(r.Context(), r.PathValue("machine"), seq, body); err != nil {
			log.Warn("batch refused", "machine", r.PathValue("machine"), "seq", seq, "err", err)
			writeError(w, err)
			return
		}
		writeJSON200(w, map[string]uint64{"acked": seq})
	})
	mux.HandleFunc("GET /v1/replicas/{machine}/hashes", func(w http.ResponseWriter, r *http.Request) {
		h, err := s.Hashes(r.Context(), r.PathValue("machine"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, h)
	})
	mux.HandleFunc("POST /v1/replicas/{machine}/failover", func(w http.ResponseWriter, r *http.Request) {
		var opts FailoverOptions
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&opts); err != nil {
			writeError(w, fmt.Errorf("%w: %v", ErrInvalid, err))
			return
		}
		fo, err := s.Failover(r.Context(), r.PathValue("machine"), opts)
		if err != nil {
			log.Error("failover", "machine", r.PathValue("machine"), "err", err)
			writeError(w, err)
			return
		}
		log.Info("failed over", "machine", fo.Machine, "as", fo.Name, "point", fo.Point.ID, "test", fo.Test, "seconds", fo.Seconds)
		writeJSON200(w, fo)
	})
	mux.HandleFunc("POST /v1/replicas/{machine}/failover/commit", func(w http.ResponseWriter, r *http.Request) {
		fo, err := s.Commit(r.Context(), r.PathValue("machine"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, fo)
	})
	mux.HandleFunc("POST /v1/replicas/{machine}/failover/cleanup", func(w http.ResponseWriter, r *http.Request) {
		fo, err := s.CleanupTest(r.Context(), r.PathValue("machine"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, fo)
	})
	mux.HandleFunc("POST /v1/replicas/{machine}/holds", func(w http.ResponseWriter, r *http.Request) {
		var opts HoldOptions
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&opts); err != nil {
			writeError(w, fmt.Errorf("%w: %v", ErrInvalid, err))
			return
		}
		h, err := s.Hold(r.Context(), r.PathValue("machine"), opts)
		if err != nil {
			writeError(w, err)
			return
		}
		log.Info("point held", "machine", h.Machine, "point", h.Point.ID, "hold", h.ID)
		writeJSON200(w, h)
	})
	mux.HandleFunc("DELETE /v1/replicas/{machine}/holds/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Release(r.Context(), r.PathValue("machine"), r.PathValue("id")); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/groups/{group}", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.GroupStatus(r.Context(), r.PathValue("group"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, st)
	})
	mux.HandleFunc("POST /v1/groups/{group}/failover", func(w http.ResponseWriter, r *http.Request) {
		var opts FailoverOptions
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&opts); err != nil {
			writeError(w, fmt.Errorf("%w: %v", ErrInvalid, err))
			return
		}
		gf, err := s.GroupFailover(r.Context(), r.PathValue("group"), opts)
		if err != nil {
			log.Error("group failover", "group", r.PathValue("group"), "err", err)
			writeError(w, err)
			return
		}
		log.Info("group failed over", "group", gf.Group, "point", gf.Point.ID, "members", len(gf.Failovers))
		writeJSON200(w, gf)
	})
	mux.HandleFunc("POST /v1/groups/{group}/failover/cleanup", func(w http.ResponseWriter, r *http.Request) {
		fos, err := s.GroupCleanupTest(r.Context(), r.PathValue("group"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON200(w, GroupFailover{Group: r.PathValue("group"), Failovers: fos})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			replyJSON(w, http.StatusUnauthorized, apiError{Error: "missing or wrong site token"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// StatusReply is GET /v1/replicas/{machine}.
type StatusReply struct {
	Status
	FailedOver []Failover `json:"failed_over,omitempty"`
}

func (s *Store) respondStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Status(r.Context(), r.PathValue("machine"))
	if err != nil {
		writeError(w, err)
		return
	}
	fos, _ := s.Failovers(r.Context(), r.PathValue("machine"))
	writeJSON200(w, StatusReply{Status: st, FailedOver: fos})
}

// apiError is every error reply's body. Code tells the errors a client
// acts on apart: out_of_order (LastSeq is where the replica stands),
// failed_over, not_found, invalid.
type apiError struct {
	Error   string `json:"error"`
	Code    string `json:"code,omitempty"`
	LastSeq uint64 `json:"last_seq,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	e := apiError{Error: err.Error()}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		status, e.Code = http.StatusBadRequest, "invalid"
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoSuchPoint):
		status, e.Code = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrOutOfOrder):
		status, e.Code = http.StatusConflict, "out_of_order"
	case errors.Is(err, ErrFailedOver):
		status, e.Code = http.StatusConflict, "failed_over"
	}
	replyJSON(w, status, e)
}

func writeJSON200(w http.ResponseWriter, v any) { replyJSON(w, http.StatusOK, v) }

func replyJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
