package replicate

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/clock"
)

// runGroupCut plays n members through one groupCut: member i is clean
// unless dirty[i], and quits before its instant when quit[i]. It returns
// the order of the instants and each member's error.
func runGroupCut(t *testing.T, n int, dirty, quit map[int]bool) ([]int, []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := newGroupCut("g", n, clock.NewFake(time.Unix(100, 0)))
	var mu sync.Mutex
	var order []int
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				if quit[i] {
					return errors.New("QEMU is gone")
				}
				if cut, err := g.take(ctx, i, g.arrive(ctx, i)); err != nil {
					return err
				} else if !cut.Equal(time.Unix(100, 0)) {
					t.Errorf("member %d's cut time %s is not the group's", i, cut)
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				g.after(i)
				return g.settle(ctx, i, "m", func(context.Context) (bool, error) {
					if i == n-1 {
						t.Error("the last member was asked whether it wrote: its writes after its instant do not matter")
					}
					return !dirty[i], nil
				})
			}()
			errs[i] = err
			g.finish(i, "m", err)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("the group cut deadlocked")
	}
	return order, errs
}

func TestGroupCut(t *testing.T) {
	order, errs := runGroupCut(t, 3, nil, nil)
	if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 {
		t.Fatalf("instants in order %v, want 0 1 2", order)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("clean group: member %d: %v", i, err)
		}
	}
	// An earlier member that wrote makes every member drop the cut.
	_, errs = runGroupCut(t, 3, map[int]bool{1: true}, nil)
	for i, err := range errs {
		if !errors.Is(err, ErrGroupMoved) {
			t.Fatalf("member 1 wrote: member %d: %v, want ErrGroupMoved", i, err)
		}
	}
	// A member that fails before its instant abandons the cut for all.
	_, errs = runGroupCut(t, 3, nil, map[int]bool{1: true})
	for i, err := range errs {
		if err == nil {
			t.Fatalf("member 1 failed: member %d took its cut anyway", i)
		}
	}
}

// A dropped group cut is retried after a random share of the interval,
// never less than a tenth of it nor more than all of it, so the retries
// drift against a writer that writes in periodic bursts.
func TestRetryAfterMove(t *testing.T) {
	every := 2 * time.Second
	for _, c := range []struct {
		u    float64
		want time.Duration
	}{{0, 200 * time.Millisecond}, {0.5, 1100 * time.Millisecond}, {0.999999, every}} {
		if got := retryAfterMove(every, c.u); got.Round(time.Millisecond) != c.want {
			t.Errorf("retryAfterMove(%s, %v) = %s, want %s", every, c.u, got, c.want)
		}
	}
}

// Runners made from one template never share a directory: each holds its
// machine's NBD socket.
func TestRunnerForSeparatesDirs(t *testing.T) {
	tmpl := Runner{Dir: "/var/lib/lifeboat/repl"}
	a, b := runnerFor(tmpl, Machine{Name: "a"}), runnerFor(tmpl, Machine{Name: "b"})
	if a.Dir == b.Dir || a.Dir != "/var/lib/lifeboat/repl/a" || a.Machine.Name != "a" {
		t.Fatalf("runners of a and b: dirs %q and %q", a.Dir, b.Dir)
	}
	if r := runnerFor(Runner{}, Machine{Name: "a"}); r.Dir != "" {
		t.Fatalf("no template dir: runner dir %q, want the default (empty until init)", r.Dir)
	}
}
