package vault

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/blob/miniotest"
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

// TestSessionAppendOnly: on MinIO with append-only credentials (no
// s3:DeleteObject), a session's refreshes and its end only create markers;
// readers take the newest, so the ended session is neither live nor a
// writer to adopt after; CheckDeletes refuses; with delete rights,
// TidySessions removes every marker of the finished session.
func TestSessionAppendOnly(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := t.Context()
	root, err := blob.NewS3(ctx, srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	kdf := crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	if _, err := Init(ctx, root, []byte("pw"), Options{KDF: kdf}); err != nil {
		t.Fatal(err)
	}
	ao, err := blob.NewS3(ctx, miniotest.AppendOnly(t, srv.Config))
	if err != nil {
		t.Fatal(err)
	}
	store := &putSignal{Store: ao, started: make(chan struct{}, 1)}
	v, err := Open(ctx, store, []byte("pw"), Options{KDF: kdf})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CheckDeletes(ctx, "prune"); !errors.Is(err, ErrAppendOnly) || !strings.Contains(err.Error(), "s3:DeleteObject") {
		t.Fatalf("CheckDeletes with append-only credentials = %v, want ErrAppendOnly naming s3:DeleteObject", err)
	}
	defer func(d time.Duration) { refreshEvery = d }(refreshEvery)
	refreshEvery = 20 * time.Millisecond
	sess, err := v.StartSession(ctx, "backup")
	if err != nil {
		t.Fatal(err)
	}
	<-store.started // the first marker
	<-store.started // a refresh
	<-store.started // another: the old markers could not be deleted
	if err := sess.End(ctx); err != nil {
		t.Fatalf("End with append-only credentials: %v", err)
	}
	live, dead, err := v.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 0 || len(dead) != 1 || !dead[0].Ended || len(dead[0].Names) < 3 {
		t.Fatalf("after End: live %+v, dead %+v; want one ended session with all its markers", live, dead)
	}
	if !dead[0].Finished(v.Clock().Now()) {
		t.Error("an ended session is not finished")
	}

	rv, err := Open(ctx, root, []byte("pw"), Options{KDF: kdf})
	if err != nil {
		t.Fatal(err)
	}
	rv.TidySessions(ctx, dead)
	n := 0
	if err := root.List(ctx, "sessions/", func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("TidySessions with delete rights left %d markers", n)
	}
}

// TestSessionNewestMarker: of a session's markers (sessions/<id>-<seq>),
// only the newest counts; a marker of older lifeboat (no sequence) is a
// session of its own; a name with a malformed sequence too.
func TestSessionNewestMarker(t *testing.T) {
	ctx := t.Context()
	store, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := Init(ctx, store, []byte("pw"), Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	now := v.Clock().Now().UTC()
	put := func(name string, info SessionInfo) {
		data, _ := json.Marshal(info)
		if err := store.Put(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}
	id := strings.Repeat("ab", 16)
	put("sessions/"+id+"-00000001", SessionInfo{Kind: "backup", Host: "elsewhere", PID: 1, Refreshed: now.Add(-time.Hour)})
	put("sessions/"+id+"-00000002", SessionInfo{Kind: "backup", Host: "elsewhere", PID: 1, Refreshed: now})
	put("sessions/"+id+"-ffffffff", SessionInfo{Kind: "backup", Host: "elsewhere", PID: 1, Refreshed: now, Ended: true})
	old := strings.Repeat("cd", 16)
	put("sessions/"+old, SessionInfo{Kind: "restore", Host: "elsewhere", PID: 1, Refreshed: now})
	put("sessions/"+id+"-zz", SessionInfo{Kind: "prune", Host: "elsewhere", PID: 1, Refreshed: now})

	live, dead, err := v.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || !dead[0].Ended || dead[0].Name != "sessions/"+id+"-ffffffff" || len(dead[0].Names) != 3 {
		t.Errorf("dead = %+v, want the one ended session with its three markers", dead)
	}
	kinds := map[string]string{}
	for _, s := range live {
		kinds[s.Name] = s.Kind
	}
	if len(live) != 2 || kinds["sessions/"+old] != "restore" || kinds["sessions/"+id+"-zz"] != "prune" {
		t.Errorf("live = %+v, want the old-style marker and the malformed name, each a session", live)
	}
}
