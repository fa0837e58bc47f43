package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
)

// Session timing (docs/format.md, "Sessions").
const (
	SessionRefresh = 5 * time.Minute
	SessionExpiry  = 30 * time.Minute
	// SessionSkew is how far in the future a marker's refreshed time may
	// be (another host's clock running ahead) before it is judged
	// implausible: planted, or written by a host whose clock is wrong.
	SessionSkew = 5 * time.Minute

	// SessionCleanup bounds ending a session (End, Abandon, Finish): a run
	// that failed because the storage froze must not hang on its marker.
	// A marker left behind dies with the process or at SessionExpiry.
	SessionCleanup = 30 * time.Second
)

// refreshEvery is SessionRefresh, shortened by tests.
var refreshEvery = SessionRefresh

// SessionInfo is the content of a session marker.
type SessionInfo struct {
	Version   int       `json:"version"`
	Kind      string    `json:"kind"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Refreshed time.Time `json:"refreshed"`
	// Abandoned marks a session that ended without finishing: it may have
	// stored packs that no index names. It is not live.
	Abandoned bool `json:"abandoned,omitempty"`
	// Ended marks a session that finished cleanly on a store that refused
	// to delete its marker (append-only credentials): it is not live and
	// left nothing to adopt.
	Ended bool `json:"ended,omitempty"`
	// Name is the session's newest marker, the one read; Names are all of
	// its markers, superseded ones included (append-only stores keep them
	// until prune removes them).
	Name  string   `json:"-"`
	Names []string `json:"-"`
	// Future is set on a marker refreshed later than SessionSkew from now:
	// it is dead, as one that expired (a marker dated in the future would
	// otherwise defer every prune until that date).
	Future bool `json:"-"`
}

// Session is a running operation's marker, kept fresh until End.
//
// The refresh goroutine owns info and name until it has stopped (done is
// closed); End and Abandon use them only after. No lock is held across
// network I/O: stopping the refresh cancels a write it has in flight.
type Session struct {
	v        *Vault
	info     SessionInfo
	id       string // the session's random ID; its markers are sessions/<id>-<seq>
	seq      int    // the sequence number of the newest marker written
	name     string // "" for a reader whose marker could not be written
	stop     chan struct{}
	stopOnce sync.Once
	cancelIO context.CancelFunc // cancels the refresh's I/O in flight
	done     chan struct{}
	// unindexed counts pack uploads attempted by this session's packers
	// and not yet named by an index object.
	unindexed atomic.Int64
}

// StartSession writes a session marker and refreshes it in the background.
// A vault opened with a stale key slot (Stale) starts none: what the
// session would write could be read with a key a rekey meant to retire.
func (v *Vault) StartSession(ctx context.Context, kind string) (*Session, error) {
	if err := v.checkWritable(ctx); err != nil {
		return nil, err
	}
	return v.startSession(ctx, kind)
}

func (v *Vault) startSession(ctx context.Context, kind string) (*Session, error) {
	now := v.clock.Now().UTC()
	s := &Session{v: v, info: SessionInfo{Version: 1, Kind: kind, Host: v.host, PID: os.Getpid(), Started: now, Refreshed: now},
		id: randomName(), stop: make(chan struct{}), done: make(chan struct{})}
	name, err := s.write(ctx)
	if err != nil {
		return nil, err
	}
	s.name = name
	ioCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancelIO = cancel
	go s.refresh(ioCtx)
	return s, nil
}

// StartReadSession is StartSession for an operation that only reads
// (restore, the source of a copy). Its marker only keeps a prune from
// deleting what it reads, so when the store refuses to write it (a
// read-only mount or credentials, a full disk: blob.IsRefused) it warns
// (Options.Warn) and goes on without one. A prune running at the same
// time could then delete data it reads; such a read fails, since every
// read is verified, and nothing wrong is restored.
func (v *Vault) StartReadSession(ctx context.Context, kind string) (*Session, error) {
	s, err := v.startSession(ctx, kind)
	if err == nil || !blob.IsRefused(err) || ctx.Err() != nil {
		return s, err
	}
	v.Warn(fmt.Sprintf("%s: going on without a session marker (%v): a prune running at the same time could delete data this %s reads; "+
		"every read is still verified, so it would fail rather than give wrong data", v.store, err, kind))
	s = &Session{v: v, stop: make(chan struct{}), done: make(chan struct{}), cancelIO: func() {}}
	close(s.done)
	return s, nil
}

// write stores the marker under the session's next name: markers are
// only ever created, so that a store that refuses deletes and overwrites
// (append-only credentials) holds every session's history, of which
// readers take the newest.
func (s *Session) write(ctx context.Context) (string, error) {
	data, _ := json.Marshal(s.info)
	s.seq++
	name := fmt.Sprintf("sessions/%s-%08x", s.id, s.seq)
	if err := s.v.store.Put(ctx, name, data); err != nil {
		return "", fmt.Errorf("writing session marker: %w", err)
	}
	return name, nil
}

func (s *Session) refresh(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			s.replace(ctx) // a failed refresh is retried at the next tick
			cancel()
		}
	}
}

// replace writes the marker anew, refreshed, under the session's next name
// (objects are never changed in place) and then tidies the old one away
// (Vault.Tidy: kept on an append-only store, where readers ignore it).
func (s *Session) replace(ctx context.Context) error {
	s.info.Refreshed = s.v.clock.Now().UTC()
	name, err := s.write(ctx)
	if err != nil {
		return err
	}
	old := s.name
	s.name = name
	if err := s.v.Tidy(ctx, old); err != nil {
		return fmt.Errorf("removing session marker: %w", err)
	}
	return nil
}

// stopRefresh ends the background refresh, cutting short a write it has
// in flight, and waits for it; it is idempotent.
func (s *Session) stopRefresh() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.cancelIO()
	})
	<-s.done
}

// End removes the marker: the operation finished and left nothing for
// another to clean up (every pack it stored is in an index object). It
// gives up after SessionCleanup.
func (s *Session) End(ctx context.Context) error {
	s.stopRefresh()
	if s.name == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, SessionCleanup)
	defer cancel()
	if !s.v.DeletesRefused() {
		err := s.v.Tidy(ctx, s.name)
		if err != nil {
			return fmt.Errorf("removing session marker: %w", err)
		}
		if !s.v.DeletesRefused() {
			return nil
		}
	}
	// The store keeps every marker: say that this session ended, under
	// the last sequence number, which readers know without reading it.
	s.info.Ended = true
	s.info.Refreshed = s.v.clock.Now().UTC()
	s.seq = endSeq - 1
	if _, err := s.write(ctx); err != nil {
		return fmt.Errorf("ending session: %w", err)
	}
	return nil
}

// endSeq is the sequence number of a session's ended marker: the highest,
// so that it is the newest, and known by its name alone.
const endSeq = 0xffffffff

// Abandon ends a session that failed part way: its marker is replaced by
// one marked abandoned, so that the next writer knows packs may have been
// left without an index and adopts them (docs/format.md, "Sessions"). If
// the store refuses even that, the old marker stays: it is dead as soon
// as this process exits or SessionExpiry passes, which has the same effect.
func (s *Session) Abandon(ctx context.Context) error {
	s.stopRefresh()
	if s.name == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, SessionCleanup)
	defer cancel()
	s.info.Abandoned = true
	return s.replace(ctx)
}

// Finish ends a writer's session: with End if every pack stored by a
// packer of this session is named by an index object, with Abandon if a
// pack upload was attempted (it may have been stored even if it failed)
// and its index object never written. A run that fails before storing
// anything leaves no marker.
func (s *Session) Finish(ctx context.Context) error {
	if s.unindexed.Load() > 0 {
		return s.Abandon(ctx)
	}
	return s.End(ctx)
}

// Sessions lists the session markers that are live: refreshed within
// SessionExpiry, not abandoned and, for this host, held by a running
// process.
func (v *Vault) Sessions(ctx context.Context) (live []SessionInfo, err error) {
	live, _, err = v.ListSessions(ctx)
	return live, err
}

// ListSessions reads every session marker and sorts them into live and
// dead ones. A dead marker was left by an operation that was killed, lost
// its host, or failed with packs it could not index (Abandoned).
// Unreadable markers are in neither list: they cannot belong to a running
// lifeboat, and nothing can be said of what they left.
func (v *Vault) ListSessions(ctx context.Context) (live, dead []SessionInfo, err error) {
	// A session's markers are sessions/<id>-<seq>: only the newest is
	// read. Any other name (older lifeboat's sessions/<random>) is a
	// session of its own.
	newest := map[string]string{}
	all := map[string][]string{}
	err = v.store.List(ctx, "sessions/", func(i blob.Info) error {
		id := sessionID(i.Name)
		all[id] = append(all[id], i.Name)
		if i.Name > newest[id] {
			newest[id] = i.Name
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing sessions: %w", err)
	}
	now := v.clock.Now()
	ids := make([]string, 0, len(newest))
	for id := range newest {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		name := newest[id]
		if name != id && strings.HasSuffix(name, fmt.Sprintf("-%08x", endSeq)) {
			// Ended: nothing in it is needed, so it is not read (an
			// append-only vault holds one per session until prune).
			dead = append(dead, SessionInfo{Ended: true, Name: name, Names: all[id]})
			continue
		}
		data, err := v.store.Get(ctx, name)
		if blob.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", name, err)
		}
		var info SessionInfo
		if json.Unmarshal(data, &info) != nil {
			continue
		}
		info.Name, info.Names = name, all[id]
		info.Future = info.Refreshed.After(now.Add(SessionSkew))
		if info.Future || info.Abandoned || info.Ended || now.Sub(info.Refreshed) > SessionExpiry || (info.Host == v.host && !processAlive(info.PID)) {
			dead = append(dead, info)
			continue
		}
		live = append(live, info)
	}
	return live, dead, nil
}

// sessionID is the session a marker's name belongs to: the name without
// its "-<8 hex>" sequence number, or the whole name for markers of older
// lifeboat (one per session).
func sessionID(name string) string {
	base, seq, ok := strings.Cut(name, "-")
	if !ok || len(seq) != 8 || strings.Trim(seq, "0123456789abcdef") != "" {
		return name
	}
	return base
}

// Finished reports whether a dead session is certainly over, so that its
// markers may be deleted: it ended or was abandoned by its own run, or its
// newest marker expired (or is dated implausibly far ahead). A session
// judged dead only because its PID is not running here may belong to a
// host of the same name (a clone, a container), and is left to expire.
func (s SessionInfo) Finished(now time.Time) bool {
	return s.Ended || s.Abandoned || s.Future || now.Sub(s.Refreshed) > SessionExpiry
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Plan is a prune plan (docs/format.md, "Prune plan").
type Plan struct {
	Version   int        `json:"version"`
	Created   time.Time  `json:"created"`
	Packs     []chunk.ID `json:"packs"`
	Indexes   []chunk.ID `json:"indexes"`
	Manifests []chunk.ID `json:"manifests"`
	ID        chunk.ID   `json:"-"`
}

// SavePlan stores a prune plan.
func (v *Vault) SavePlan(ctx context.Context, p *Plan) error {
	data, _ := json.Marshal(p)
	id, err := v.SaveObject(ctx, KindCondemned, data)
	p.ID = id
	return err
}

// Plans loads every prune plan.
func (v *Vault) Plans(ctx context.Context) ([]*Plan, error) {
	ids, err := v.ListIDs(ctx, KindCondemned)
	if err != nil {
		return nil, err
	}
	var plans []*Plan
	for _, id := range ids {
		data, err := v.LoadObject(ctx, KindCondemned, id)
		if blob.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p := &Plan{}
		if err := json.Unmarshal(data, p); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", ObjectName(KindCondemned, id), chunk.ErrCorrupt, err)
		}
		p.ID = id
		plans = append(plans, p)
	}
	return plans, nil
}

// CondemnedPacks returns the set of packs named by any plan.
func CondemnedPacks(plans []*Plan) map[chunk.ID]bool {
	set := map[chunk.ID]bool{}
	for _, p := range plans {
		for _, id := range p.Packs {
			set[id] = true
		}
	}
	return set
}
