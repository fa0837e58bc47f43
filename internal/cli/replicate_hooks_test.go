package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type hookRun struct {
	phase string
	at    time.Time
}

// hookLog reads the hooks' log: one "PHASE UNIX-NS" line per run.
func hookLog(t *testing.T, path string) []hookRun {
	t.Helper()
	b, _ := os.ReadFile(path)
	var out []hookRun
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("hook log line %q", l)
		}
		out = append(out, hookRun{f[0], time.Unix(0, ns)})
	}
	return out
}

type appStatus struct {
	LastAppCut   *time.Time `json:"last_app_cut"`
	LastAppError string     `json:"last_app_error"`
}

// With --pre-hook and --post-hook, an app-consistent cut of a TCG VM
// (mirror capture, its guest agent freezing ext4) is taken between its
// pre-hook and its post-hook, which run in turn with the machine in their
// environment. When the pre-hook fails, the post-hook still runs, the cut
// is crash-consistent (no app point after the failure), and status says
// why in last_app_error.
func TestReplicateVMAppHooks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), vmBootDeadline)
	defer cancel()
	dir := t.TempDir()
	logf, fail := filepath.Join(dir, "hooks.log"), filepath.Join(dir, "fail")
	pre := fmt.Sprintf(`[ "$LIFEBOAT_HOOK $LIFEBOAT_MACHINE" = "pre vm1" ] || exit 9; echo pre $(date +%%s%%N) >> %s; [ ! -e %s ]`, logf, fail)
	post := fmt.Sprintf(`[ "$LIFEBOAT_HOOK" = post ] || exit 9; echo post $(date +%%s%%N) >> %s`, logf)
	s, _ := counterVM(t, ctx, true, "--app-interval", "2s", "--pre-hook", pre, "--post-hook", post)
	status := func() appStatus {
		r := s.run("replicate", "status", "--machine", "vm1", "--json")
		var st appStatus
		json.Unmarshal([]byte(r.stdout), &st)
		return st
	}
	var st appStatus
	waitFor(t, 2*time.Minute, "an app-consistent cut", func() bool { st = status(); return st.LastAppCut != nil })
	if st.LastAppError != "" {
		t.Fatalf("an app-consistent cut with last_app_error %q", st.LastAppError)
	}
	waitFor(t, 30*time.Second, "the post-hook of the cut", func() bool {
		runs := hookLog(t, logf)
		return len(runs) > 0 && runs[len(runs)-1].phase == "post" && runs[len(runs)-1].at.After(*st.LastAppCut)
	})
	runs := hookLog(t, logf)
	around := false
	for i, r := range runs {
		if want := []string{"pre", "post"}[i%2]; r.phase != want {
			t.Fatalf("hook run %d is %s, want %s: the hooks do not run in turn: %+v", i, r.phase, want, runs)
		}
		if r.phase == "post" && runs[i-1].at.Before(*st.LastAppCut) && r.at.After(*st.LastAppCut) {
			around = true
		}
	}
	if !around {
		t.Fatalf("the app-consistent cut at %s is not between a pre-hook and its post-hook: %+v", st.LastAppCut.Format(time.RFC3339Nano), runs)
	}

	// The pre-hook fails from now on.
	os.WriteFile(fail, nil, 0o600)
	waitFor(t, time.Minute, "status to report the failed pre-hook", func() bool {
		st = status()
		return strings.Contains(st.LastAppError, "pre hook")
	})
	failedAt := time.Now()
	lastApp := *st.LastAppCut
	// Another failed attempt, its post-hook run.
	waitFor(t, time.Minute, "another attempt with its post-hook", func() bool {
		runs := hookLog(t, logf)
		return len(runs) >= 2 && runs[len(runs)-1].phase == "post" && runs[len(runs)-2].at.After(failedAt)
	})
	s.cutAfter("vm1", time.Now(), time.Minute)
	st = status()
	if !st.LastAppCut.Equal(lastApp) || !strings.Contains(st.LastAppError, "pre hook") {
		t.Fatalf("after failing pre-hooks: last_app_cut %s (was %s), last_app_error %q", st.LastAppCut, lastApp, st.LastAppError)
	}
	r := s.run("--json", "replicate", "points", "--machine", "vm1")
	var pts struct {
		Points []struct {
			Time        time.Time `json:"time"`
			Consistency string    `json:"consistency"`
		} `json:"points"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pts) != nil {
		t.Fatalf("replicate points: %s", r)
	}
	for _, p := range pts.Points {
		if p.Consistency == "app" && p.Time.After(lastApp) {
			t.Fatalf("an app-consistent point at %s, after the pre-hook failed (last good %s)", p.Time, lastApp)
		}
	}
	if r := s.run("replicate", "status", "--machine", "vm1"); !strings.Contains(r.stdout, "fell short") {
		t.Fatalf("the status table does not say the app-consistent cut fell short:\n%s", r.stdout)
	}
}
