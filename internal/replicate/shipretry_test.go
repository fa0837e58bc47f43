package replicate

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/journal"
	"lifeboat/internal/replica"
)

// A journal batch whose acknowledgement was lost (the site stored it, the
// reply never came) is sent again exactly as it was first built: the site
// acknowledges the batch it already holds unread, so the source must take
// the same records as acknowledged. Here the first attempt ends at a group
// marker the group kept; by the retry the group decided more than 1024
// later markers, so the marker's verdict is forgotten and would read as
// dropped: a batch rebuilt then reaches past the marker, and the writes
// after it would be taken as shipped while the site never got them.
func TestShipBatchRetryIsTheSameBatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := replica.Open(filepath.Join(dir, "replica"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var dropAck atomic.Bool
	site := store.Handler("tok", slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if dropAck.Load() && strings.Contains(req.URL.Path, "/batches/") {
			// The site stores the batch; its reply is lost.
			site.ServeHTTP(httptest.NewRecorder(), req)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		site.ServeHTTP(w, req)
	}))
	defer srv.Close()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := OpenConfig(filepath.Join(dir, "state"))
	if err := cfg.AddSite(Site{Name: "dr", URL: srv.URL, TokenFile: token}); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	spec := replica.Spec{Machine: "m0", Group: "g", Disks: []replica.DiskSpec{{Name: "a", Size: size}}}
	j, err := journal.Create(filepath.Join(dir, "journal"), 1<<30, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Remove()
	marks := newGroupMarks(time.Now().UnixNano())
	r := &Runner{Config: cfg, Machine: Machine{Name: "m0", Target: "dr", Group: "g"}, Clock: clock.Real{},
		Log: slog.New(slog.DiscardHandler), marks: marks, mirror: &mirrorSession{j: j, rc: &receiver{j: j, gate: &writeGate{}}}}
	if err := r.init(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Register(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := cfg.put("state", "m0", State{}); err != nil {
		t.Fatal(err)
	}

	block := func(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
	j.Append(journal.KindData, 0, 0, 0, block('a'))
	id := marks.newID()
	j.Append(journal.KindMarker, markGroup, id, 0, nil)
	marks.decide(id, markVerdict{cut: time.Now()})
	j.Append(journal.KindData, 0, 4096, 0, block('b'))

	dropAck.Store(true)
	if err := r.shipBatch(ctx, false); err == nil {
		t.Fatal("a batch whose acknowledgement was lost counted as acknowledged")
	}
	dropAck.Store(false)
	// The link stays down while the group goes on cutting: the marker's
	// verdict is forgotten.
	for range 1100 {
		marks.decide(marks.newID(), markVerdict{})
	}
	if err := r.shipBatch(ctx, false); err != nil {
		t.Fatal(err)
	}
	j.Append(journal.KindData, 0, 8192, 0, block('c'))
	for m := r.mirror; m.j.Stats().End > m.shipped; {
		if err := r.shipBatch(ctx, false); err != nil {
			t.Fatal(err)
		}
	}

	out := filepath.Join(dir, "out")
	if _, err := store.Failover(ctx, "m0", replica.FailoverOptions{Point: "latest", DisksOnly: true, To: out}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "a.raw"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, block('a'))
	copy(want[4096:], block('b'))
	copy(want[8192:], block('c'))
	for off := 0; off < 3*4096; off += 4096 {
		if !bytes.Equal(got[off:off+4096], want[off:off+4096]) {
			t.Errorf("the replica's block at %d is %q..., the source wrote %q...", off, got[off:off+8], want[off:off+8])
		}
	}
}
