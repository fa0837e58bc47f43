package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"lifeboat/internal/bytesize"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// bar draws a one-line progress bar on a terminal and nothing elsewhere.
type bar struct {
	w     io.Writer
	label string
	on    bool
	mu    sync.Mutex
	last  int
}

func newBar(w io.Writer, label string, enabled bool) *bar {
	return &bar{w: w, label: label, on: enabled && isTerminal(w)}
}

func (b *bar) update(done, total int64, elapsed time.Duration, final bool) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	eta := "--"
	if rate > 0 && done < total {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	line := fmt.Sprintf("%s %s / %s  %5.1f%%  %s/s  ETA %s", b.label, size(done), size(total), pct, size(int64(rate)), eta)
	if final {
		line = fmt.Sprintf("%s %s in %s  %s/s", b.label, size(total), elapsed.Round(10*time.Millisecond), size(int64(rate)))
	}
	pad := b.last - len(line)
	if pad < 0 {
		pad = 0
	}
	fmt.Fprintf(b.w, "\r%s%*s", line, pad, "")
	b.last = len(line)
	if final {
		fmt.Fprintln(b.w)
	}
}

// size formats a byte count in binary units.
var size = bytesize.Format
