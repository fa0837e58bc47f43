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
	budget   time.Duration
}

// RetryPolicy says how hard a Retry store tries.
type RetryPolicy struct {
	// Attempts is how many times a call is tried, at least once.
	Attempts int
	// Backoff is the wait before the second attempt; it doubles for each
	// one after, with jitter, up to 30 seconds.
	Backoff time.Duration
	// Budget, if positive, bounds the time spent on one call: no attempt
	// starts, and no wait lasts, past Budget after the first attempt
	// started. An attempt in flight is not cut short (a transfer that
	// moves may take its time); one that stalls fails on the store's own
	// stall timeout. So a call on a frozen server fails within about
	// Budget plus one stall timeout.
	Budget time.Duration
}

// DefaultRetry is the policy of the S3 vaults lifeboat opens: five
// attempts within two minutes, enough to ride out a server pause of about
// a minute and a half, and no more.
var DefaultRetry = RetryPolicy{Attempts: 5, Backoff: 200 * time.Millisecond, Budget: 2 * time.Minute}

// NewRetry wraps store so that each call is tried up to attempts times
// (at least once), with no time budget; see NewRetryPolicy.
func NewRetry(store Store, attempts int, backoff time.Duration) Store {
	return NewRetryPolicy(store, RetryPolicy{Attempts: attempts, Backoff: backoff})
}

// NewRetryPolicy wraps store so that each call is retried as p says.
// Before attempt n+1 it waits about backoff·2^(n-1), with jitter and at
// most 30 seconds. It gives up at once on errors satisfying IsPermanent
// (ErrNotExist, refusals, the context's errors but a transport's own
// timeouts), when ctx ends, and when the budget is spent. It returns the
// last error, wrapped with the number of attempts and, if the budget ran
// out, with the budget.
//
// A listing that fails part way is retried from the start, and fn is not
// called again for names it has already seen; an error from fn is returned
// at once.
func NewRetryPolicy(store Store, p RetryPolicy) Store {
	return &retry{store: store, attempts: max(p.Attempts, 1), backoff: max(p.Backoff, 0), budget: max(p.Budget, 0)}
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

// do runs op until it succeeds, fails permanently, or the attempts or the
// budget run out. op reports final=true for an error that must not be
// retried.
func (r *retry) do(ctx context.Context, op func() (final bool, err error)) error {
	var err error
	var spent <-chan time.Time // fires when the budget is spent
	if r.budget > 0 {
		t := time.NewTimer(r.budget)
		defer t.Stop()
		spent = t.C
	}
	for attempt := range r.attempts {
		if attempt > 0 {
			t := time.NewTimer(r.delay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (retrying after: %w)", ctx.Err(), err)
			case <-spent:
				t.Stop()
				return r.spent(attempt, err)
			case <-t.C:
			}
		}
		var final bool
		final, err = op()
		if err == nil || final || ctx.Err() != nil || IsPermanent(err) {
			return err
		}
		select {
		case <-spent:
			return r.spent(attempt+1, err)
		default:
		}
	}
	if r.attempts == 1 {
		return err
	}
	return fmt.Errorf("giving up after %d attempts: %w", r.attempts, err)
}

func (r *retry) spent(attempts int, err error) error {
	return fmt.Errorf("giving up after %d attempt(s): the retry budget of %s is spent: %w", attempts, r.budget, err)
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
