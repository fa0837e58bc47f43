package cli_test

import (
	"testing"
	"time"
)

// mirrorOutage checks the guest's writes made while the site was out of
// reach (from, to): some were made, and none waited for the site.
func mirrorOutage(t *testing.T, w *mirrorWriter, from, to time.Time) {
	t.Helper()
	writes := w.during(from, to)
	var slowest, slowestWall time.Duration
	for _, gw := range writes {
		slowest, slowestWall = max(slowest, gw.op), max(slowestWall, gw.end.Sub(gw.start))
	}
	t.Logf("%d guest writes in the %s the site was out of reach; the slowest took %s (qemu-io's run: %s)",
		len(writes), to.Sub(from).Round(time.Millisecond), slowest, slowestWall)
	if len(writes) == 0 {
		t.Fatal("no guest write completed while the site was out of reach")
	}
	if slowest > time.Second {
		t.Fatalf("a guest write took %s while the site was out of reach: the guest waited for the site", slowest)
	}
}

// keptPoints fails the test unless every point of before that was not
// the latest then is still a point of machine.
func (s *replSite) keptPoints(machine string, before []replPoint) {
	s.t.Helper()
	after, _ := s.points(machine)
	have := map[uint64]bool{}
	for _, p := range after {
		have[p.ID] = true
	}
	for i, p := range before {
		// The latest cut is a point until a newer one in its interval.
		if i < len(before)-1 && !have[p.ID] {
			s.t.Fatalf("point %d (%s) was lost: before %+v, after %+v", p.ID, p.Time.Format(time.RFC3339Nano), before, after)
		}
	}
}

// journalGrows waits until the runner reports the site unreachable while
// the source journal's use grows past what it was at the first report.
func (s *replSite) journalGrows(machine string) mirrorStatus {
	s.t.Helper()
	var first, st mirrorStatus
	waitFor(s.t, 30*time.Second, "the runner to report the site unreachable while the source journal grows", func() bool {
		var ok bool
		if st, ok = s.mirrorStatus(machine); !ok || st.State != "error" || st.Error == "" || st.Journal == 0 {
			return false
		}
		if first.Journal == 0 {
			first = st
		}
		return st.Journal > first.Journal
	})
	return st
}

// Mirror capture with the link to the site (a replica server in its own
// network namespace) cut while the guest writes: the guest's writes keep
// completing at the source journal's pace, the journal absorbs them (status
// shows it grow) with no fallback to bitmap cuts, and once the link is
// back it drains, the lag falls back, every point taken before the cut
// still holds its writes, the points after it hold exactly the writes
// before their times, and the latest equals the source.
func TestReplicateMirrorLinkCut(t *testing.T) {
	s := newNetnsSite(t)
	d := newMirrorDaemon(t)
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--crash-interval", "1s", "--capture", "mirror", "--nbd-server", "unix:"+d.nbdSock, "--stall-timeout", "2s")
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s", runner.stderr.String())
		}
	}()
	d.write("write -P 0x61 0 1M")
	s.mirroring("qsd", time.Now())
	base := d.image()
	w := startMirrorWriter(d)
	defer w.halt()
	// Points under the writer: the first cut of the next crash interval.
	before := s.mirroring("qsd", time.Now().Truncate(time.Second).Add(time.Second))
	pointsBefore, _ := s.points("qsd")

	cutAt := time.Now()
	s.setLink(false)
	during := s.journalGrows("qsd")
	// Noticed within seconds: the link's probes go unanswered for the
	// stall timeout, even with the last batch all sent, its reply awaited.
	t.Logf("the cut link was reported after %s", time.Since(cutAt).Round(time.Millisecond))
	if noticed := time.Since(cutAt); noticed > 15*time.Second {
		t.Fatalf("the cut link was reported after %s, with --stall-timeout 2s", noticed)
	}
	// The link stays cut a few seconds at least, journaling on.
	waitFor(t, 30*time.Second, "the link cut for 4 s", func() bool {
		if st, ok := s.mirrorStatus("qsd"); ok && st.State == "error" {
			during = st
		}
		return time.Since(cutAt) > 4*time.Second
	})
	restoreAt := time.Now()
	s.setLink(true)
	t.Logf("while cut: %+v", during)
	if during.Capture != "mirror" || during.Fallbacks != before.Fallbacks || during.Resyncs != 0 {
		t.Fatalf("the cut link made the mirror fall back (the journal, %d of %d bytes, was not full): %+v", during.Journal, during.JournalLimit, during)
	}
	mirrorOutage(t, w, cutAt, restoreAt)

	var back mirrorStatus
	waitFor(t, 60*time.Second, "the journal to drain and the lag to fall after the link is back", func() bool {
		var ok bool
		back, ok = s.mirrorStatus("qsd")
		return ok && back.State == "protected" && back.LastCut != nil && back.LastCut.After(restoreAt) && back.LagSeconds < 2
	})
	writes := w.halt()
	end := s.mirroring("qsd", time.Now())
	waitFor(t, 30*time.Second, "the journal drained", func() bool {
		var ok bool
		end, ok = s.mirrorStatus("qsd")
		return ok && end.Journal == 0
	})
	t.Logf("link back: %+v; after the writer: %+v", back, end)
	if end.Capture != "mirror" || end.Fallbacks != before.Fallbacks || end.Resyncs != 0 {
		t.Fatalf("after the link came back: %+v, want the same mirror (fallbacks %d) and no resync", end, before.Fallbacks)
	}
	runner.kill()
	s.keptPoints("qsd", pointsBefore)
	t.Logf("%d replica points checked against %d writes", s.checkPointsHoldWrites("qsd", base, writes), len(writes))
	s.checkReplica("qsd", "latest", d.image(), "after the link came back the replica differs from the source")
}

// Mirror capture with the replica server (in its own network namespace)
// killed -9 while the guest writes, then restarted on its directory: the
// guest does not wait for it, the mirror journals on (no fallback), the
// shipping resumes from the last acknowledged batch — no full resync: the
// site grows by a small part of the disk, which is full of incompressible
// data —, no point the site acknowledged is lost, every point holds
// exactly the writes before its time, and the latest equals the source.
func TestReplicateMirrorTargetKilled(t *testing.T) {
	const size = 16 << 20
	s := newNetnsSite(t)
	d := newMirrorDaemonFrom(t, randomImage(t, size))
	runner := startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", d.qmp, "--target", "dr", "--every", "300ms",
		"--crash-interval", "1s", "--capture", "mirror", "--nbd-server", "unix:"+d.nbdSock, "--stall-timeout", "2s")
	defer func() {
		if t.Failed() {
			t.Logf("runner:\n%s\nreplica server:\n%s", runner.stderr.String(), s.srv.stderr.String())
		}
	}()
	start := s.mirroring("qsd", time.Now())
	base := d.image()
	siteBefore := siteBytes(t, s.dir)
	w := startMirrorWriter(d)
	defer w.halt()
	// Killed mid-stream: batches under the writer, and a point.
	s.mirroring("qsd", time.Now().Truncate(time.Second).Add(time.Second))
	waitFor(t, 30*time.Second, "journal batches under the writer", func() bool {
		st, ok := s.mirrorStatus("qsd")
		return ok && st.Shipped > 64<<10
	})
	pointsBefore, seqBefore := s.points("qsd")
	before, _ := s.mirrorStatus("qsd")
	if !s.srv.kill() {
		t.Fatal("the replica server did not die of SIGKILL")
	}
	killedAt := time.Now()
	s.journalGrows("qsd")
	waitFor(t, 30*time.Second, "the site down for 2 s", func() bool { return time.Since(killedAt) > 2*time.Second })
	restartAt := time.Now()
	s.start()
	mirrorOutage(t, w, killedAt, restartAt)

	s.mirroring("qsd", restartAt)
	// A point under the writer after the restart too.
	s.mirroring("qsd", time.Now().Truncate(time.Second).Add(time.Second))
	writes := w.halt()
	end := s.mirroring("qsd", time.Now())
	sent, journaled := siteBytes(t, s.dir)-siteBefore, end.Shipped-start.Shipped
	t.Logf("before the kill: %+v (site at cut %d); at the end: %+v; the site grew by %d bytes for %d journal bytes shipped over %d writes",
		before, seqBefore, end, sent, journaled, len(writes))
	if end.Capture != "mirror" || end.Fallbacks != before.Fallbacks || end.Resyncs != 0 || end.Shipped < before.Shipped {
		t.Fatalf("after the replica server restarted: %+v, want the same mirror shipping on (before: %+v)", end, before)
	}
	// The site holds the journal's records as they are: what it got is
	// what the journal shipped, not the disk again.
	if end.LastSeq <= seqBefore || sent > journaled+size/4 {
		t.Fatalf("after the restart the site is at cut %d (was %d) and grew by %d bytes for %d journal bytes (the disk is %d): not resumed",
			end.LastSeq, seqBefore, sent, journaled, size)
	}
	runner.kill()
	s.keptPoints("qsd", pointsBefore)
	if _, last := s.points("qsd"); last != end.LastSeq {
		t.Fatalf("the site is at cut %d, the runner had %d acknowledged", last, end.LastSeq)
	}
	t.Logf("%d replica points checked against %d writes", s.checkPointsHoldWrites("qsd", base, writes), len(writes))
	s.checkReplica("qsd", "latest", d.image(), "after the replica server was killed the replica differs from the source")
}
