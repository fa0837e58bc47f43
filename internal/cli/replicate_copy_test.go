package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

type copyResult struct {
	ID            string `json:"id"`
	AlreadyCopied bool   `json:"already_copied"`
	Cut           struct {
		ID   uint64    `json:"id"`
		Time time.Time `json:"time"`
	} `json:"cut"`
	Point struct {
		Time        time.Time  `json:"time"`
		Consistency string     `json:"consistency"`
		Tags        []string   `json:"tags"`
		Disks       []liveDisk `json:"disks"`
	} `json:"point"`
}

// runCopy runs replicate copy of qsd's point into vaultDir.
func (s *replSite) runCopy(vaultDir, point string) result {
	env := map[string]string{"LIFEBOAT_PASSWORD": testPassphrase}
	for k, v := range s.env {
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return inProcEnv(ctx, env, "--vault", vaultDir, "--json", "replicate", "copy", "--machine", "qsd", "--point", point)
}

func (s *replSite) copyPoint(vaultDir, point string) copyResult {
	s.t.Helper()
	r := s.runCopy(vaultDir, point)
	var res copyResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
		s.t.Fatalf("replicate copy --point %s: %s", point, r)
	}
	return res
}

// Replica points copied into a vault become ordinary points of the
// machine: restored, they equal the replica's point byte for byte; the
// second copy reads only what the replica's journal saw written since the
// first (change source replica); copying the same cut again writes nothing.
func TestReplicateCopyToVault(t *testing.T) {
	_, sock, fuse := storageDaemon(t)
	s := newReplSite(t)
	startProcEnv(t, s.env, "replicate", "run", "--machine", "qsd", "--qmp", sock, "--target", "dr", "--every", "200ms",
		"--crash-interval", "1ms") // every cut a point: the test copies and compares the one it listed
	vaultDir := filepath.Join(t.TempDir(), "vault")
	initVault(t, vaultDir, 0)

	writeAt(t, fuse, 0, bytes.Repeat([]byte("first copy "), 100000))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	points, _ := s.points("qsd")
	first := points[len(points)-1]
	c1 := s.copyPoint(vaultDir, fmt.Sprint(first.ID))
	if c1.AlreadyCopied || c1.Cut.ID != first.ID || !c1.Point.Time.Equal(first.Time) || c1.Point.Consistency != "crash" {
		t.Fatalf("first copy: %+v, want cut %d at %s, crash", c1, first.ID, first.Time)
	}
	if !slices.Contains(c1.Point.Tags, "replica") || d0(c1).Tracking == "" {
		t.Fatalf("the copied point does not say it came from replication: tags %q, tracking %q", c1.Point.Tags, d0(c1).Tracking)
	}
	replicaAt := func(id uint64) []byte {
		out := t.TempDir()
		if r := s.run("failover", "--machine", "qsd", "--point", fmt.Sprint(id), "--disks-only", "--to", out); r.code != 0 {
			t.Fatalf("failover --disks-only: %s", r)
		}
		return readFile(t, filepath.Join(out, "d0.raw"))
	}
	restoreCompare(t, vaultDir, "qsd", c1.ID, "d0", replicaAt(first.ID))

	// 64 KiB changed on an 8 MiB disk: the second copy reads about that.
	writeAt(t, fuse, 4<<20, bytes.Repeat([]byte("second"), 64<<10/6))
	s.cutAfter("qsd", time.Now(), 30*time.Second)
	points, _ = s.points("qsd")
	second := points[len(points)-1]
	c2 := s.copyPoint(vaultDir, fmt.Sprint(second.ID))
	d := d0(c2)
	if d.ChangeSource != "replica" || d.Stats.ReadBytes > 2<<20 {
		t.Fatalf("second copy: change source %q, %d bytes read; want replica, under 2 MiB", d.ChangeSource, d.Stats.ReadBytes)
	}
	restoreCompare(t, vaultDir, "qsd", c2.ID, "d0", replicaAt(second.ID))
	// The first copied point is still the first cut.
	restoreCompare(t, vaultDir, "qsd", c1.ID, "d0", replicaAt(first.ID))

	if c3 := s.copyPoint(vaultDir, fmt.Sprint(second.ID)); !c3.AlreadyCopied || c3.ID != c2.ID {
		t.Fatalf("copying the same cut again: %+v, want already copied as %s", c3, c2.ID)
	}
	if r := s.runCopy(vaultDir, "999999"); r.code != 8 {
		t.Fatalf("copying a point the replica lacks: %s, want exit 8", r)
	}

	// --every follows the replica: a write made while it runs reaches the
	// vault by itself.
	p := startProcEnv(t, s.env, "--vault", vaultDir, "replicate", "copy", "--machine", "qsd", "--every", "300ms")
	writeAt(t, fuse, 6<<20, bytes.Repeat([]byte("third"), 10000))
	third := s.cutAfter("qsd", time.Now(), 30*time.Second).LastSeq
	copied := regexp.MustCompile(`copied a replica point" machine=qsd cut=(\d+) point=(\w+)`)
	var id string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replicate copy --every:\n%s", p.stderr.String())
		}
	})
	waitFor(t, 60*time.Second, "copy --every to copy the cut after the write", func() bool {
		for _, m := range copied.FindAllStringSubmatch(p.stderr.String(), -1) {
			if n, _ := strconv.ParseUint(m[1], 10, 64); n >= third {
				id = m[2]
				return true
			}
		}
		return p.exited()
	})
	if id == "" {
		t.Fatalf("replicate copy --every exited:\n%s", p.stderr.String())
	}
	p.kill()
	restoreCompare(t, vaultDir, "qsd", id, "d0", readFile(t, fuse))
}

func d0(c copyResult) liveDisk {
	if len(c.Point.Disks) == 0 {
		return liveDisk{}
	}
	return c.Point.Disks[0]
}
