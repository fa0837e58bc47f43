package vault

import (
	"context"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/s3test"
	"lifeboat/internal/crypto"
)

// putSignal tells when a Put of a session marker starts.
type putSignal struct {
	blob.Store
	started chan struct{}
}

func (p *putSignal) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "sessions/") {
		select {
		case p.started <- struct{}{}:
		default:
		}
	}
	return p.Store.Put(ctx, name, data)
}

// TestSessionEndWhileRefreshHangs: a session whose marker refresh hangs on
// a frozen S3 server (versitygw, SIGSTOP) ends within its caller's
// deadline: no lock is held across the refresh's network I/O, and ending
// cancels it.
func TestSessionEndWhileRefreshHangs(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config
	cfg.StallTimeout = 30 * time.Second // longer than the test may take
	s3, err := blob.OpenS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	store := &putSignal{Store: s3, started: make(chan struct{}, 1)}
	v, err := Init(t.Context(), store, []byte("pw"), Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { refreshEvery = d }(refreshEvery)
	refreshEvery = 20 * time.Millisecond
	sess, err := v.StartSession(t.Context(), "backup")
	if err != nil {
		t.Fatal(err)
	}
	<-store.started // the marker's first write
	srv.Pause()
	<-store.started // a refresh is writing to the frozen server now

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err = sess.Abandon(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Abandon took %v with a refresh hanging, want about the caller's 2s deadline", d)
	}
	if err == nil {
		t.Error("Abandon on a frozen server succeeded")
	}
}
