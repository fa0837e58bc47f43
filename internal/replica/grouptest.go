package replica

import (
	"context"
	"errors"
	"fmt"
)

// GroupCleanupTest stops and removes the test failover of every member of
// group that has one (failover --group G --test-cleanup); the replicas are
// untouched. It fails with ErrNotFound when no member has one.
func (s *Store) GroupCleanupTest(ctx context.Context, group string) ([]*Failover, error) {
	_, names := s.groupMembers(group)
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: group %s has no member at this site", ErrNotFound, group)
	}
	var out []*Failover
	var errs []error
	for _, name := range names {
		fo, err := s.CleanupTest(ctx, name)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			errs = append(errs, fmt.Errorf("member %s: %w", name, err))
		default:
			out = append(out, fo)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("group %s: cleaning the test failovers up: %w", group, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no member of group %s has a test failover", ErrNotFound, group)
	}
	return out, nil
}
