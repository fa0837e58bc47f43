package blob

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// maxBackoff caps the wait between two attempts.
const maxBackoff = 30 * time.Second

// retry is the Store returned by NewRetry.
type retry struct {
	store    Store
	attempts int
	backoff  time.Duration
}

// NewRetry wraps store so that each call is tried up to attempts times
// (at least once). Before attempt n+1 it waits about backoff·2^(n-1), with
// jitter and at most 30 seconds. It gives up at once on errors satisfying
// IsPermanent (which include ErrNotExist and the context's errors) and when
// ctx ends while waiting. After the last attempt it returns the last error,
// wrapped with the number of attempts.
//
// A listing that fails part way is retried from the start, and fn is not
// called again for names it has already seen; an error from fn is returned
// at once.
func NewRetry(store Store, attempts int, backoff time.Duration) Store {
	return &retry{store: store, attempts: max(attempts, 1), backoff: max(backoff, 0)}
}

func (r *retry) String() string { return r.store.String() }

// delay returns the wait before the given attempt (1 is the second one).
func (r *retry) delay(attempt int) time.Duration {
	d := r.backoff
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	// Full jitter on the upper half keeps concurrent retries apart.
	return d/2 + rand.N(d/2+1)
}

// do runs op until it succeeds, fails permanently, or the attempts run out.
// op reports final=true for an error that must not be retried.
func (r *retry) do(ctx context.Context, op func() (final bool, err error)) error {
	var err error
	for attempt := range r.attempts {
		if attempt > 0 {
			t := time.NewTimer(r.delay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (retrying after: %w)", ctx.Err(), err)
			case <-t.C:
			}
		}
		var final bool
		final, err = op()
		if err == nil || final || IsPermanent(err) {
			return err
		}
	}
	if r.attempts == 1 {
		return err
	}
	return fmt.Errorf("giving up after %d attempts: %w", r.attempts, err)
}

func (r *retry) Put(ctx context.Context, name string, data []byte) error {
	return r.do(ctx, func() (bool, error) {
		return false, r.store.Put(ctx, name, data)
	})
}

func (r *retry) Get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := r.do(ctx, func() (bool, error) {
		var err error
		data, err = r.store.Get(ctx, name)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

func (r *retry) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	var data []byte
	err := r.do(ctx, func() (bool, error) {
		var err error
		data, err = r.store.GetRange(ctx, name, offset, length)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

func (r *retry) GetRangeInto(ctx context.Context, name string, offset, length int64, dst []byte) ([]byte, error) {
	var data []byte
	err := r.do(ctx, func() (bool, error) {
		var err error
		data, err = ReadRange(ctx, r.store, name, offset, length, dst)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

func (r *retry) Stat(ctx context.Context, name string) (Info, error) {
	var info Info
	err := r.do(ctx, func() (bool, error) {
		var err error
		info, err = r.store.Stat(ctx, name)
		return false, err
	})
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

func (r *retry) List(ctx context.Context, prefix string, fn func(Info) error) error {
	seen := map[string]bool{}
	return r.do(ctx, func() (bool, error) {
		var fnErr error
		err := r.store.List(ctx, prefix, func(info Info) error {
			if seen[info.Name] {
				return nil
			}
			seen[info.Name] = true
			fnErr = fn(info)
			return fnErr
		})
		return fnErr != nil, err
	})
}

func (r *retry) Delete(ctx context.Context, name string) error {
	return r.do(ctx, func() (bool, error) {
		return false, r.store.Delete(ctx, name)
	})
}
