package blob

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Op names a Store method for fault injection.
type Op string

// The operations a Fault can match. OpGet covers Get and GetRange.
const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpDelete Op = "delete"
)

// ErrInjected is the default error of a Fault. It is transient: the Retry
// wrapper retries it.
var ErrInjected = errors.New("injected fault")

// Fault describes calls that a Faults store fails. Every fault counts the
// calls it matches; when several fire on the same call, the one added first
// decides the error.
type Fault struct {
	// Op restricts the fault to one operation; empty matches all.
	Op Op
	// Prefix restricts the fault to names with this prefix; for OpList the
	// listing's prefix must start with it. Empty matches every name.
	Prefix string
	// Nth, if positive, fails only the Nth matching call (counting from 1
	// when the fault is added); zero fails every matching call.
	Nth int
	// After performs the call on the underlying store before returning the
	// error, like a response lost on the way back: a Put is stored, a
	// Delete done, yet the caller sees a failure.
	After bool
	// Err is the error to return, wrapped with the operation and the name;
	// nil means ErrInjected.
	Err error
}

// Faults is a Store for tests that passes calls to another Store and fails
// the ones matching the faults it has been given, to simulate a storage
// endpoint that errors part way through an upload. Without faults it
// behaves exactly like the store it wraps. It is safe for concurrent use.
type Faults struct {
	store Store

	mu       sync.Mutex
	faults   []*fault
	calls    map[Op]int
	injected int
}

type fault struct {
	Fault
	seen int // matching calls so far
}

// NewFaults wraps store with no faults configured.
func NewFaults(store Store) *Faults {
	return &Faults{store: store, calls: map[Op]int{}}
}

// Add arms a fault.
func (f *Faults) Add(flt Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &fault{Fault: flt})
}

// FailNth fails the nth call of op from now on with err (nil: ErrInjected).
func (f *Faults) FailNth(op Op, n int, err error) {
	f.Add(Fault{Op: op, Nth: n, Err: err})
}

// FailPrefix fails every operation on names with prefix with err (nil:
// ErrInjected) until Clear.
func (f *Faults) FailPrefix(prefix string, err error) {
	f.Add(Fault{Prefix: prefix, Err: err})
}

// Clear removes all faults.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// Calls returns how many times op has been called, failed calls included.
func (f *Faults) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Injected returns how many calls have been failed.
func (f *Faults) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// check counts a call and returns the fault it must fail with, if any.
func (f *Faults) check(op Op, name string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	var hit *Fault
	for _, flt := range f.faults {
		if flt.Op != "" && flt.Op != op || !strings.HasPrefix(name, flt.Prefix) {
			continue
		}
		flt.seen++
		if hit == nil && (flt.Nth == 0 || flt.seen == flt.Nth) {
			hit = &flt.Fault
		}
	}
	if hit != nil {
		f.injected++
	}
	return hit
}

func (f *Faults) fail(flt *Fault, op Op, name string) error {
	err := flt.Err
	if err == nil {
		err = ErrInjected
	}
	return fmt.Errorf("%s: %s %s: %w", f, op, name, err)
}

func (f *Faults) String() string { return f.store.String() }

func (f *Faults) Put(ctx context.Context, name string, data []byte) error {
	flt := f.check(OpPut, name)
	if flt == nil {
		return f.store.Put(ctx, name, data)
	}
	if flt.After {
		if err := f.store.Put(ctx, name, data); err != nil {
			return err
		}
	}
	return f.fail(flt, OpPut, name)
}

func (f *Faults) Get(ctx context.Context, name string) ([]byte, error) {
	flt := f.check(OpGet, name)
	if flt == nil {
		return f.store.Get(ctx, name)
	}
	if flt.After {
		if _, err := f.store.Get(ctx, name); err != nil {
			return nil, err
		}
	}
	return nil, f.fail(flt, OpGet, name)
}

func (f *Faults) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	flt := f.check(OpGet, name)
	if flt == nil {
		return f.store.GetRange(ctx, name, offset, length)
	}
	if flt.After {
		if _, err := f.store.GetRange(ctx, name, offset, length); err != nil {
			return nil, err
		}
	}
	return nil, f.fail(flt, OpGet, name)
}

func (f *Faults) Stat(ctx context.Context, name string) (Info, error) {
	flt := f.check(OpStat, name)
	if flt == nil {
		return f.store.Stat(ctx, name)
	}
	if flt.After {
		if _, err := f.store.Stat(ctx, name); err != nil {
			return Info{}, err
		}
	}
	return Info{}, f.fail(flt, OpStat, name)
}

// List fails before calling fn at all, or with After, once the listing has
// been passed to fn in full.
func (f *Faults) List(ctx context.Context, prefix string, fn func(Info) error) error {
	flt := f.check(OpList, prefix)
	if flt == nil {
		return f.store.List(ctx, prefix, fn)
	}
	if flt.After {
		if err := f.store.List(ctx, prefix, fn); err != nil {
			return err
		}
	}
	return f.fail(flt, OpList, prefix)
}

func (f *Faults) Delete(ctx context.Context, name string) error {
	flt := f.check(OpDelete, name)
	if flt == nil {
		return f.store.Delete(ctx, name)
	}
	if flt.After {
		if err := f.store.Delete(ctx, name); err != nil {
			return err
		}
	}
	return f.fail(flt, OpDelete, name)
}
