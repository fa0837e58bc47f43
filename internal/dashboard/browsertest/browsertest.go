// Package browsertest drives a real headless Chromium for tests of the
// dashboard, through the DevTools protocol (chromedp). Without a Chromium
// the test is skipped, unless CI=true or LIFEBOAT_REQUIRE_BROWSER=1 is set:
// then it fails (scripts/deps.sh installs Debian's chromium).
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("LIFEBOAT_REQUIRE_BROWSER") == "1"
}

// Browser is one headless Chromium with one tab. Its context is for
// chromedp.Run; Problems lists what the page reported as wrong.
type Browser struct {
	Ctx context.Context

	mu       sync.Mutex
	problems []string
}

// Start starts Chromium (chromium --headless=new --no-sandbox, a fresh
// profile) for the test; it is stopped when the test ends.
func Start(t *testing.T) *Browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if required() {
			t.Fatal("a browser is required here (CI=true or LIFEBOAT_REQUIRE_BROWSER=1) but no chromium is installed: run scripts/deps.sh")
		}
		t.Skip("no chromium: install it (scripts/deps.sh) or set LIFEBOAT_REQUIRE_BROWSER=1 to fail instead")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &Browser{Ctx: ctx}
	// The first Run starts the browser: a failure to start is reported
	// here.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		if required() {
			t.Fatalf("starting %s: %v", path, err)
		}
		t.Skipf("starting %s: %v", path, err)
	}
	// Exceptions, console errors, failed loads, CSP violations.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.problem("%s %s", m, m.URL)
			}
		}
	}()
	return b
}

func (b *Browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// Problems returns the exceptions, console errors, failed loads and
// security-policy violations the pages reported so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Text returns the text of the first element sel (a CSS selector)
// matches in the tab of ctx, trimmed; it fails t if there is none.
func Text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// Wait waits until the JavaScript expression expr is true in the tab of
// ctx, for at most 45 s, and fails t naming what it waited for if not.
func Wait(t testing.TB, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(45*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Click clicks the first element sel matches in the tab of ctx, as a user
// would, and fails t if it cannot. A dashboard view is redrawn whenever
// its data change (it refreshes every few seconds), so the node a query
// found may be replaced before the click reaches it ("Could not find node
// with given id"): the click is then tried again on the new node.
func Click(t testing.TB, ctx context.Context, sel string) {
	t.Helper()
	var err error
	for range 5 {
		if _, err = chromedp.Run(ctx, chromedp.Click(chromedp.CSS(sel))); err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
	}
	if err != nil {
		t.Fatalf("clicking %s: %v", sel, err)
	}
}
