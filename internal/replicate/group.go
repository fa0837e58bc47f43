package replicate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"lifeboat/internal/clock"
)

// ErrGroupMoved: a member of a group wrote between the first member's
// instant and the last's, so the members' cuts do not show one instant;
// the group cut is dropped (its bitmaps merged back) and taken again.
var ErrGroupMoved = errors.New("a group member wrote while the group cut was taken")

// groupCut coordinates one consistent cut across a group's members, each
// taking its own QMP transaction (one per QEMU process) in turn, member 0
// first. The cuts show the state of every member at the last member's
// instant when no earlier member wrote between its own instant and that
// one: each earlier member's new dirty bitmap (started by its transaction)
// is still empty once the last member has cut. Otherwise the group cut is
// abandoned and retried; it never ships members at different instants.
type groupCut struct {
	name string
	n    int
	clk  clock.Clock
	turn []chan struct{} // turn[i] closed: member i may take its instant

	mu          sync.Mutex
	t0          time.Time
	ready       int
	allReady    chan struct{}
	cut, judged int
	moved       []string
	settled     []bool
	allCut      chan struct{}
	allJudged   chan struct{}
	abort       chan struct{}
	abortOnce   sync.Once
	abortReason error
	// pause: every member that can pauses its guest once all are ready
	// and resumes it after the last member's instant and its own check
	// (a paused cut, grouppause.go).
	pause bool
}

func newGroupCut(name string, n int, clk clock.Clock) *groupCut {
	g := &groupCut{name: name, n: n, clk: clk, turn: make([]chan struct{}, n), settled: make([]bool, n),
		allReady: make(chan struct{}), allCut: make(chan struct{}), allJudged: make(chan struct{}), abort: make(chan struct{})}
	for i := range g.turn {
		g.turn[i] = make(chan struct{})
	}
	close(g.turn[0])
	return g
}

func (g *groupCut) fail(err error) {
	g.abortOnce.Do(func() {
		g.abortReason = err
		close(g.abort)
	})
}

func (g *groupCut) wait(ctx context.Context, ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-g.abort:
		return fmt.Errorf("group %s: cut abandoned: %w", g.name, g.abortReason)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// arrive waits until every member is ready for its instant (its cut
// prepared, its guest frozen for an app-consistent cut).
func (g *groupCut) arrive(ctx context.Context, i int) error {
	g.mu.Lock()
	if g.ready++; g.ready == g.n {
		close(g.allReady)
	}
	g.mu.Unlock()
	return g.wait(ctx, g.allReady)
}

// take waits, after arrive (whose error it is given), for member i's
// turn, and returns the group cut's time (read before the first member's
// instant, so it claims no write a cut lacks).
func (g *groupCut) take(ctx context.Context, i int, arrived error) (time.Time, error) {
	if arrived != nil {
		return time.Time{}, arrived
	}
	if err := g.wait(ctx, g.turn[i]); err != nil {
		return time.Time{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if i == 0 {
		g.t0 = g.clk.Now()
	}
	return g.t0, nil
}

// waitCut waits until every member took its instant (or the cut was
// abandoned).
func (g *groupCut) waitCut(ctx context.Context) { g.wait(ctx, g.allCut) }

// after records member i's instant and lets the next member take its.
func (g *groupCut) after(i int) {
	if i+1 < g.n {
		close(g.turn[i+1])
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cut++; g.cut == g.n {
		close(g.allCut)
	}
}

// settle waits until every member cut, has member i (all but the last)
// check that it wrote nothing since its instant (clean), then waits for
// every member's verdict: ErrGroupMoved when any wrote.
func (g *groupCut) settle(ctx context.Context, i int, member string, clean func(context.Context) (bool, error)) error {
	if err := g.wait(ctx, g.allCut); err != nil {
		return err
	}
	if i < g.n-1 {
		ok, err := clean(ctx)
		if err != nil {
			g.fail(err)
			return err
		}
		if !ok {
			g.mu.Lock()
			g.moved = append(g.moved, member)
			g.mu.Unlock()
		}
	}
	g.mu.Lock()
	g.settled[i] = true
	if g.judged++; g.judged == g.n {
		close(g.allJudged)
	}
	g.mu.Unlock()
	if err := g.wait(ctx, g.allJudged); err != nil {
		return err
	}
	if len(g.moved) > 0 {
		return fmt.Errorf("%w (%v): group %s retries", ErrGroupMoved, g.moved, g.name)
	}
	return nil
}

// finish is called when member i's cycle ends: one that ended before its
// verdict (it failed, or its machine is failed over) abandons the cut.
func (g *groupCut) finish(i int, member string, err error) {
	g.mu.Lock()
	settled := g.settled[i]
	g.mu.Unlock()
	if !settled {
		if err == nil {
			err = errors.New("it took no cut")
		}
		g.fail(fmt.Errorf("member %s: %w", member, err))
	}
}

// GroupRunner replicates a group's members together: each cycle is one
// consistent cut across all of them (groupCut), each member's share
// shipped to its target as its own batch carrying the group cut's
// instant. The site fails the group over to a cut every member holds.
type GroupRunner struct {
	Group   string
	Members []*Runner
	Clock   clock.Clock

	dropped    int         // bitmap cuts dropped in a row (ErrGroupMoved)
	marks      *groupMarks // mirror capture: the verdicts on cut markers
	failedCuts int         // mirror capture: group cuts failed in a row
	// mirror capture: the last app-consistent group cut, and try.
	lastApp, lastAppTry time.Time
}

// Run replicates the group until ctx ends; failures are reported in the
// members' status and retried every cycle.
func (g *GroupRunner) Run(ctx context.Context) error {
	if g.Clock == nil {
		g.Clock = clock.Real{}
	}
	if len(g.Members) == 0 {
		return fmt.Errorf("%w: group %s has no member", ErrInvalid, g.Group)
	}
	every := g.Members[0].Machine.every()
	mirrored := g.mirrored()
	if mirrored {
		g.marks = newGroupMarks(g.Clock.Now().UnixNano())
		// A mirror must not outlive its receiver: stopped with the runner.
		defer g.stopMirrors(ctx)
	}
	for _, r := range g.Members {
		if err := r.init(); err != nil {
			return err
		}
		r.marks = g.marks
		if !mirrored && r.Machine.capture() == CaptureMirror {
			r.status.LastFallback = fmt.Sprintf("group %s: mirror capture needs every member enabled with --capture mirror: the group takes bitmap cuts", g.Group)
			r.Log.Warn("mirror capture not used", "machine", r.Machine.Name, "why", r.status.LastFallback)
		}
		r.saveStatus()
	}
	for {
		start := g.Clock.Now()
		var moved bool
		switch {
		case g.pausedNow():
			// Paused together: no group cut, every mirror stopped.
			if mirrored {
				g.stopMirrors(ctx)
			}
			for _, r := range g.Members {
				r.holdPaused(ctx, false)
			}
		case mirrored:
			g.leavePause()
			moved = g.mirrorPeriod(ctx)
		default:
			g.leavePause()
			moved = g.cycle(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := max(0, every-g.Clock.Now().Sub(start))
		if moved {
			wait = retryAfterMove(every, rand.Float64())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// retryAfterMove is how long a group waits before it takes a cut again
// after one was dropped because a member wrote (ErrGroupMoved): a random
// share u (in [0,1)) of the interval, at least a tenth of it. Waiting the
// fixed interval instead locks the cuts in phase with a periodic writer:
// every cut then lands in a burst of writes and none is ever kept.
func retryAfterMove(every time.Duration, u float64) time.Duration {
	return every/10 + time.Duration(u*float64(every-every/10))
}

// cycle takes one group cut across the members and ships each member's
// share; failures are in the members' status. It reports whether the
// cut was dropped because a member wrote while it was taken.
func (g *GroupRunner) cycle(ctx context.Context) (moved bool) {
	gc := newGroupCut(g.Group, len(g.Members), g.Clock)
	gc.pause = g.plan()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := false
	for i, r := range g.Members {
		r.group, r.groupIdx = gc, i
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.step(ctx)
			gc.finish(i, r.Machine.Name, err)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrGroupMoved) {
				moved = true
			} else if err != nil {
				failed = true
			}
		}()
	}
	wg.Wait()
	switch {
	case moved:
		g.dropped++
	case !failed:
		g.dropped = 0
	}
	return moved
}

// runnerFor is template's runner for machine m. A Dir in the template is
// the parent of one directory per machine: it holds the machine's NBD
// socket and overlays, which two machines must never share.
func runnerFor(template Runner, m Machine) Runner {
	r := template
	r.Machine = m
	if template.Dir != "" {
		r.Dir = filepath.Join(template.Dir, m.Name)
	}
	return r
}

// RunMachines replicates machines until ctx ends: the members of each
// group together (GroupRunner), every other machine on its own (Runner).
// template gives every runner's settings but Machine.
func RunMachines(ctx context.Context, machines []Machine, template Runner) error {
	eg, ctx := errgroup.WithContext(ctx)
	groups := map[string]*GroupRunner{}
	for _, m := range machines {
		r := runnerFor(template, m)
		if m.Group == "" {
			eg.Go(func() error { return r.Run(ctx) })
			continue
		}
		gr := groups[m.Group]
		if gr == nil {
			gr = &GroupRunner{Group: m.Group, Clock: template.Clock}
			groups[m.Group] = gr
		}
		gr.Members = append(gr.Members, &r)
	}
	for _, gr := range groups {
		eg.Go(func() error { return gr.Run(ctx) })
	}
	return eg.Wait()
}

// GroupMembers are this host's machines in group.
func (c *Config) GroupMembers(group string) ([]Machine, error) {
	ms, err := c.Machines()
	if err != nil {
		return nil, err
	}
	var out []Machine
	for _, m := range ms {
		if m.Group == group {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no machine of group %s replicates from this host (replicate enable --group)", ErrNotFound, group)
	}
	return out, nil
}

// GroupClient is a client of site, or of the group's target site (all
// its members replicate to one site).
func (c *Config) GroupClient(group, site string) (*Client, error) {
	if site == "" {
		ms, err := c.GroupMembers(group)
		if err != nil {
			return nil, fmt.Errorf("%w (or name the site with --site)", err)
		}
		site = ms[0].Target
		for _, m := range ms[1:] {
			if m.Target != site {
				return nil, fmt.Errorf("%w: group %s replicates to sites %s and %s: name one with --site", ErrInvalid, group, site, m.Target)
			}
		}
	}
	s, err := c.Site(site)
	if err != nil {
		return nil, err
	}
	return Dial(s)
}

// pausedNow tells whether any member is paused (replicate pause --group
// pauses them all): the group takes no cut then.
func (g *GroupRunner) pausedNow() bool {
	for _, r := range g.Members {
		if r.pausedNow() {
			return true
		}
	}
	return false
}

func (g *GroupRunner) leavePause() {
	for _, r := range g.Members {
		r.leavePause()
	}
}
