package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultEventBuffer is the buffer of a subscription made with Events.
const DefaultEventBuffer = 256

// ErrEventOverflow ends a subscription whose buffer was full when an event
// for it arrived: the event could not be delivered, so the subscriber can no
// longer trust that it has seen everything.
var ErrEventOverflow = errors.New("qmp event subscription overflowed (events were not read fast enough)")

// Event is one asynchronous QMP event.
type Event struct {
	Name string          // e.g. JOB_STATUS_CHANGE
	Data json.RawMessage // the event's "data" object, may be nil
	Time time.Time       // QEMU's timestamp
}

// Decode unmarshals the event's data into v.
func (e Event) Decode(v any) error {
	if len(e.Data) == 0 {
		return fmt.Errorf("event %s has no data", e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decoding %s event data %s: %w", e.Name, truncate(e.Data), err)
	}
	return nil
}

// Subscription receives the events whose names it was made for.
//
// Drop policy: the reader never blocks on a subscriber. If an event arrives
// while C's buffer is full, the subscription ends: C is closed and Err
// returns ErrEventOverflow. A subscriber therefore either sees every matching
// event in order or learns that it did not. C is also closed, with Err set,
// when the subscription is closed or the monitor's connection ends.
type Subscription struct {
	// C delivers the events, in the order QEMU sent them.
	C <-chan Event

	c     chan Event
	names map[string]bool // nil: all events
	m     *Monitor

	mu  sync.Mutex
	err error
}

// Subscribe starts delivering the named events (all events when no name is
// given) with a buffer of the given size. Subscribe before running the
// command that causes the events: QEMU does not replay events.
func (m *Monitor) Subscribe(buffer int, names ...string) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, m: m}
	if len(names) > 0 {
		s.names = make(map[string]bool, len(names))
		for _, n := range names {
			s.names[n] = true
		}
	}
	m.mu.Lock()
	if m.subs == nil { // connection already ended
		err := m.err
		m.mu.Unlock()
		s.end(err)
		return s
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

// Events is Subscribe with DefaultEventBuffer.
func (m *Monitor) Events(names ...string) *Subscription {
	return m.Subscribe(DefaultEventBuffer, names...)
}

// Close ends the subscription; C is closed. It is idempotent.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	_, live := s.m.subs[s]
	delete(s.m.subs, s)
	s.m.mu.Unlock()
	if live {
		s.end(errSubscriptionClosed)
	}
}

var errSubscriptionClosed = errors.New("qmp event subscription closed")

// Err reports why C was closed, or nil while it is open.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// end closes C with the given reason. The caller must have removed s from
// the monitor's set (so only one goroutine ever ends it).
func (s *Subscription) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	close(s.c)
}

// publish delivers ev to every matching subscription, without blocking.
func (m *Monitor) publish(ev Event) {
	m.mu.Lock()
	var overflowed []*Subscription
	for s := range m.subs {
		if s.names != nil && !s.names[ev.Name] {
			continue
		}
		select {
		case s.c <- ev:
		default:
			delete(m.subs, s)
			overflowed = append(overflowed, s)
		}
	}
	m.mu.Unlock()
	for _, s := range overflowed {
		s.end(fmt.Errorf("%w: %s not delivered", ErrEventOverflow, ev.Name))
	}
}

// WaitEvent returns the first event from sub for which match returns true
// (any event when match is nil), discarding the others. It fails when ctx
// ends or the subscription ends (overflow, Close, connection lost).
func WaitEvent(ctx context.Context, sub *Subscription, match func(Event) bool) (Event, error) {
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				return Event{}, fmt.Errorf("waiting for a QMP event: %w", sub.Err())
			}
			if match == nil || match(ev) {
				return ev, nil
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("waiting for a QMP event: %w", ctx.Err())
		}
	}
}
