// Package progressbar draws a one-line progress bar of bytes done on a
// terminal: size done of total, percent, rate and ETA, redrawn in place,
// and a summary line at the end. Elsewhere (a pipe, a file) it draws
// nothing, so that scripts read only what the commands print.
package progressbar

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

// Bar is a progress bar on w; Update may be called from several
// goroutines.
type Bar struct {
	w     io.Writer
	label string
	on    bool
	mu    sync.Mutex
	last  int
}

// New is a bar labelled label on w, drawn only when enabled and w is a
// terminal.
func New(w io.Writer, label string, enabled bool) *Bar {
	return &Bar{w: w, label: label, on: enabled && isTerminal(w)}
}

// Update redraws the bar: done of total bytes after elapsed; final draws
// the summary line and ends the line.
func (b *Bar) Update(done, total int64, elapsed time.Duration, final bool) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	line := Line(b.label, done, total, elapsed, final)
	pad := max(b.last-len(line), 0)
	fmt.Fprintf(b.w, "\r%s%*s", line, pad, "")
	b.last = len(line)
	if final {
		fmt.Fprintln(b.w)
	}
}

// Line is the bar's text: "label done / total  pct%  rate/s  ETA d", or
// with final "label total in elapsed  rate/s".
func Line(label string, done, total int64, elapsed time.Duration, final bool) string {
	size := bytesize.Format
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	if final {
		return fmt.Sprintf("%s %s in %s  %s/s", label, size(total), elapsed.Round(10*time.Millisecond), size(int64(rate)))
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	eta := "--"
	if rate > 0 && done < total {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s %s / %s  %5.1f%%  %s/s  ETA %s", label, size(done), size(total), pct, size(int64(rate)), eta)
}
