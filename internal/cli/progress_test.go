package cli

import (
	"strings"
	"testing"
	"time"
)

func TestBarETA(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		eta         string
	}{
		{done: 25 << 20, total: 100 << 20, elapsed: 10 * time.Second, eta: "ETA 30s"},
		{done: 1 << 30, total: 4 << 30, elapsed: time.Minute, eta: "ETA 3m0s"},
		{done: 0, total: 100, elapsed: time.Second, eta: "ETA --"},
		{done: 100, total: 100, elapsed: time.Second, eta: "ETA --"},
	} {
		var out strings.Builder
		b := &bar{w: &out, label: "backup", on: true}
		b.update(tc.done, tc.total, tc.elapsed, false)
		if !strings.HasSuffix(strings.TrimSpace(out.String()), tc.eta) {
			t.Errorf("%d of %d in %s: got %q, want it to end in %q", tc.done, tc.total, tc.elapsed, out.String(), tc.eta)
		}
	}
}
