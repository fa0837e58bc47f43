package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
)

// A replication group's members take their cuts together (the source's
// replicate.GroupRunner): every member's batch of one group cut carries
// the same GroupCut, the cut's instant. A group cut the site holds for
// every member is a group point; failing the group over to it shows every
// member at that one instant.

// GroupStatus is a group as the site holds it.
type GroupStatus struct {
	Group   string   `json:"group"`
	Members []string `json:"members"`
	// Points are the group cuts every member holds, chosen by the first
	// member's policy as a machine's points are; a point's ID is its
	// GroupCut.
	Points []Point `json:"points"`
}

// exactCut is the point of the cut seq, which the replica must hold.
func (m *machine) exactCut(seq uint64) (Point, error) {
	all := m.allCuts()
	for i, c := range all {
		if c.Seq == seq {
			return Point{ID: c.Seq, Time: c.Time, Consistency: c.Consistency, Latest: i == len(all)-1}, nil
		}
	}
	return Point{}, fmt.Errorf("%w: cut %d is not held (folded, or never received)", ErrNoSuchPoint, seq)
}

// groupMembers are the machines registered in group, by name, each
// locked by the caller in that order.
func (s *Store) groupMembers(group string) ([]*machine, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, m := range s.machines {
		if m.spec.Group == group {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	ms := make([]*machine, len(names))
	for i, n := range names {
		ms[i] = s.machines[n]
	}
	return ms, names
}

// groupCuts is, for each member, its cut of every group cut all members
// hold (GroupCut → seq), and the first member's cuts among them, in order.
func (s *Store) groupCuts(group string) ([]*machine, []string, []map[int64]uint64, []Cut, error) {
	if group == "" {
		return nil, nil, nil, nil, fmt.Errorf("%w: a group name is required", ErrInvalid)
	}
	ms, names := s.groupMembers(group)
	if len(ms) == 0 {
		return nil, nil, nil, nil, fmt.Errorf("%w: group %s", ErrNotFound, group)
	}
	seqs := make([]map[int64]uint64, len(ms))
	for i, m := range ms {
		m.mu.Lock()
		seqs[i] = map[int64]uint64{}
		for _, c := range m.allCuts() {
			if c.Group == group && c.GroupCut != 0 {
				seqs[i][c.GroupCut] = c.Seq
			}
		}
		m.mu.Unlock()
	}
	var common []Cut
	ms[0].mu.Lock()
	for _, c := range ms[0].allCuts() {
		if c.Group != group || c.GroupCut == 0 {
			continue
		}
		held := true
		for _, sq := range seqs[1:] {
			if _, ok := sq[c.GroupCut]; !ok {
				held = false
			}
		}
		if held {
			c.Seq = uint64(c.GroupCut)
			common = append(common, c)
		}
	}
	ms[0].mu.Unlock()
	return ms, names, seqs, common, nil
}

// GroupFailover is a group's failover: the group point, and each
// member's failover to its cut of it.
type GroupFailover struct {
	Group     string      `json:"group"`
	Point     Point       `json:"point"`
	Failovers []*Failover `json:"failovers"`
}

// GroupStatus reports a group's members and points.
func (s *Store) GroupStatus(ctx context.Context, group string) (GroupStatus, error) {
	ms, names, _, common, err := s.groupCuts(group)
	if err != nil {
		return GroupStatus{}, err
	}
	return GroupStatus{Group: group, Members: names, Points: Points(common, ms[0].spec.Policy, s.clock.Now())}, nil
}

// GroupFailover fails every member of group over to the same group cut:
// opts.Point chooses among the group's points (latest, latest-app, an ID
// or a time) and each member fails over to its own cut of it, so no
// member is ever ahead of another. Members already failed over before an
// error stay failed over; the error names them.
func (s *Store) GroupFailover(ctx context.Context, group string, opts FailoverOptions) (*GroupFailover, error) {
	if opts.ExportNBD != "" {
		// One address cannot serve several members' daemons.
		return nil, fmt.Errorf("%w: --export-nbd serves one machine's disks: fail the members over one at a time", ErrInvalid)
	}
	ms, names, seqs, common, err := s.groupCuts(group)
	if err != nil {
		return nil, err
	}
	pt, err := Choose(Points(common, ms[0].spec.Policy, s.clock.Now()), opts.Point)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", group, err)
	}
	out := &GroupFailover{Group: group, Point: pt}
	for i, name := range names {
		o := opts
		o.Cut = seqs[i][int64(pt.ID)]
		if o.DisksOnly {
			o.To = filepath.Join(opts.To, name) // each member's disks in its own directory
		}
		fo, err := s.Failover(ctx, name, o)
		if err != nil && opts.Test {
			// A test of the group is all or nothing: the copies started
			// already are removed again.
			for _, f := range out.Failovers {
				if _, cerr := s.CleanupTest(context.WithoutCancel(ctx), f.Machine); cerr != nil {
					err = errors.Join(err, cerr)
				}
			}
			return nil, fmt.Errorf("group %s: test failover of %s: %w", group, name, err)
		}
		if err != nil {
			done := make([]string, len(out.Failovers))
			for k, f := range out.Failovers {
				done[k] = f.Name
			}
			return out, errors.Join(fmt.Errorf("group %s: failing %s over to group point %s", group, name, strconv.FormatUint(pt.ID, 10)),
				err, fmt.Errorf("already failed over: %v", done))
		}
		out.Failovers = append(out.Failovers, fo)
	}
	return out, nil
}
