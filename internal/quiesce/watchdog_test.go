package quiesce

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// runDog runs RunWatchdog on a pipe and returns the pipe's write end and
// a function that waits for it and returns the items it thawed.
func runDog(ctx context.Context, timeout time.Duration) (io.WriteCloser, func() []string) {
	r, w := io.Pipe()
	var mu sync.Mutex
	var thawed []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunWatchdog(ctx, r, timeout, func(_ context.Context, it string) error {
			mu.Lock()
			defer mu.Unlock()
			thawed = append(thawed, it)
			return nil
		})
	}()
	return w, func() []string {
		<-done
		return thawed
	}
}

func TestRunWatchdog(t *testing.T) {
	ctx := context.Background()
	// The parent goes away: armed items are thawed, disarmed ones are not.
	w, wait := runDog(ctx, time.Hour)
	io.WriteString(w, "+/a\n+/b\n-/a\n+/c\n")
	w.Close()
	if got := wait(); !slices.Equal(got, []string{"/b", "/c"}) {
		t.Fatalf("thawed %q, want /b and /c", got)
	}
	// Nothing armed: the watchdog exits as soon as its parent is gone.
	w, wait = runDog(ctx, time.Hour)
	w.Close()
	if got := wait(); len(got) != 0 {
		t.Fatalf("thawed %q with nothing armed", got)
	}
	// Told to stop (SIGTERM from a service manager): it thaws at once,
	// with its parent still there.
	cctx, cancel := context.WithCancel(ctx)
	w, wait = runDog(cctx, time.Hour)
	io.WriteString(w, "+guest\n")
	io.WriteString(w, "\n") // returns once the line before is taken in
	cancel()
	if got := wait(); !slices.Equal(got, []string{"guest"}) {
		t.Fatalf("thawed %q on cancel, want guest", got)
	}
	w.Close()
	// The timeout thaws too, with the parent still there.
	w, wait = runDog(ctx, 500*time.Millisecond)
	io.WriteString(w, "+/m\n")
	io.WriteString(w, "\n")
	if got := wait(); !slices.Equal(got, []string{"/m"}) {
		t.Fatalf("thawed %q on timeout, want /m", got)
	}
	w.Close()
}
