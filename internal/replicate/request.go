package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"lifeboat/internal/clock"
	"lifeboat/internal/nbd"
	"lifeboat/internal/replica"
)

// invalid is a bad request whose message stands on its own; it is
// ErrInvalid for errors.Is.
type invalid string

func (e invalid) Error() string        { return string(e) }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error { return invalid(fmt.Sprintf(format, args...)) }

// invalidWrap makes an error, message unchanged, ErrInvalid too.
type invalidWrap struct{ error }

func (e invalidWrap) Is(target error) bool { return target == ErrInvalid }
func (e invalidWrap) Unwrap() error        { return e.error }

// ErrNoMachines: replicate run found no machine to replicate.
var ErrNoMachines = invalid("no machine replicates from this host: lifeboat replicate enable first")

// ReadSecret reads a secret (a site token) from file, without surrounding
// white space; flag names where the file was given, for the errors. A
// missing, unreadable or empty file is ErrInvalid.
func ReadSecret(file, flag string) (string, error) {
	if file == "" {
		return "", invalidf("%s is required", flag)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", invalidWrap{fmt.Errorf("reading %s: %w", flag, err)}
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", invalidf("%s %s is empty", flag, file)
	}
	return t, nil
}

// Load completes m from files: the machine definition in definitionFile
// (none when empty) and the seeds given as DISK=IMAGE.
func (m *Machine) Load(definitionFile string, seeds []string) error {
	if definitionFile != "" {
		data, err := os.ReadFile(definitionFile)
		if err != nil {
			return invalidWrap{fmt.Errorf("reading --definition: %w", err)}
		}
		m.Definition = data
	}
	seed, err := ParseSeeds(seeds)
	if err != nil {
		return err
	}
	if seed != nil {
		m.Seed = seed
	}
	return nil
}

// ParseSeeds parses DISK=IMAGE values into a map from disk to image
// (nil for none).
func ParseSeeds(values []string) (map[string]string, error) {
	var seed map[string]string
	for _, sd := range values {
		disk, image, ok := strings.Cut(sd, "=")
		if !ok || disk == "" || image == "" {
			return nil, invalidf("--seed %q: want DISK=IMAGE", sd)
		}
		if seed == nil {
			seed = map[string]string{}
		}
		seed[disk] = image
	}
	return seed, nil
}

// Selected returns the machine called name, or every machine of this host
// when name is empty. A machine that is not there, or no machine at all,
// is ErrInvalid.
func (c *Config) Selected(name string) ([]Machine, error) {
	if name != "" {
		m, err := c.Machine(name)
		if err != nil {
			return nil, invalidWrap{err}
		}
		return []Machine{m}, nil
	}
	machines, err := c.Machines()
	if err != nil {
		return nil, err
	}
	if len(machines) == 0 {
		return nil, ErrNoMachines
	}
	return machines, nil
}

// Run is replicate run: the machine called name, or the members of group
// on this host (none is ErrInvalid), replicated as RunMachines does; with
// neither, every machine of this host, followed as they are enabled and
// disabled (Supervise). It runs until ctx ends.
func (c *Config) Run(ctx context.Context, name, group string, template Runner) error {
	template.Config = c
	var machines []Machine
	var err error
	switch {
	case name != "":
		machines, err = c.Selected(name)
	case group != "":
		if machines, err = c.GroupMembers(group); err != nil {
			err = invalidWrap{err}
		}
	default:
		return Supervise(ctx, c, template)
	}
	if err != nil {
		return err
	}
	return RunMachines(ctx, machines, template)
}

// Statuses reads the status of the machine called name as of now, or of
// every machine of this host when name is empty.
func (c *Config) Statuses(ctx context.Context, name string, now time.Time) ([]Status, error) {
	names := []string{name}
	if name == "" {
		ms, err := c.Machines()
		if err != nil {
			return nil, err
		}
		names = names[:0]
		for _, m := range ms {
			names = append(names, m.Name)
		}
	}
	out := []Status{} // an empty list, not null, in JSON
	for _, n := range names {
		st, err := c.MachineStatus(ctx, n, now)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// FailoverRequest is a failover as an operator asks for it: to a point
// (Options), planned (from the source host, losing nothing), or the
// removal of a test failover (Cleanup).
type FailoverRequest struct {
	Machine string
	// Site is the target site; empty for the machine's replication target.
	Site             string
	Planned, Cleanup bool
	// PointGiven says the point was chosen, which a planned failover
	// refuses (it fails over to the last cut after the pause).
	PointGiven bool
	Options    replica.FailoverOptions
}

// Validate checks that the request's options go together.
func (r FailoverRequest) Validate() error {
	o := r.Options
	switch {
	case r.Machine == "":
		return invalid("--machine or --group is required")
	case r.Cleanup && (o.Test || o.DisksOnly):
		return invalid("--test-cleanup takes no other failover option")
	case r.Planned && (r.Cleanup || o.Test || o.DisksOnly || r.Site != "" || r.PointGiven):
		return invalid("--planned fails over to the last cut after pausing the source: it takes no --point, --site, --test or --disks-only")
	case o.DisksOnly != (o.To != ""):
		return invalid("--disks-only and --to go together")
	case o.ExportNBD != "" && (r.Cleanup || o.DisksOnly):
		return invalid("--export-nbd serves the failover's disks instead of starting the machine: it does not go with --disks-only or --test-cleanup")
	}
	if o.ExportNBD != "" {
		if _, _, err := nbd.ParseListen(o.ExportNBD); err != nil {
			return invalid("--export-nbd: " + err.Error())
		}
	}
	return nil
}

// Failover runs a failover request against its site, within 30 minutes.
func (c *Config) Failover(ctx context.Context, r FailoverRequest, clk clock.Clock, log *slog.Logger) (*replica.Failover, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	cl, err := c.ClientFor(r.Machine, r.Site)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	switch {
	case r.Planned:
		return c.PlannedFailover(ctx, r.Machine, r.Options, clk, log)
	case r.Cleanup:
		return cl.CleanupTest(ctx, r.Machine)
	}
	return cl.Failover(ctx, r.Machine, r.Options)
}

// GroupFailoverRequest is a replication group's failover as an operator
// asks for it: every member to the same group cut, planned (from the
// source host), or the removal of the group's test failover (Cleanup).
type GroupFailoverRequest struct {
	Group string
	// Machine must be empty: a group fails over whole.
	Machine string
	// Site is the target site; empty for the group's replication target.
	Site             string
	Planned, Cleanup bool
	Options          replica.FailoverOptions
}

// Validate checks that the request's options go together.
func (r GroupFailoverRequest) Validate() error {
	o := r.Options
	n := 0
	for _, b := range []bool{r.Planned, r.Cleanup, o.Test, o.DisksOnly} {
		if b {
			n++
		}
	}
	switch {
	case r.Machine != "":
		return invalid("--group fails the whole group over: it takes no --machine")
	case n > 1:
		return invalid("--planned, --test, --test-cleanup and --disks-only exclude one another")
	case o.DisksOnly != (o.To != ""):
		return invalid("--disks-only and --to go together")
	case r.Planned && r.Site != "":
		return invalid("--planned runs on the source host and fails over to the group's target: it takes no --site")
	case o.ExportNBD != "":
		return invalid("--export-nbd serves one machine's disks: fail the members over one at a time")
	}
	return nil
}

// GroupFailover runs a group failover request against its site, within
// 30 minutes.
func (c *Config) GroupFailover(ctx context.Context, r GroupFailoverRequest, clk clock.Clock, log *slog.Logger) (*replica.GroupFailover, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	cl, err := c.GroupClient(r.Group, r.Site)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	switch {
	case r.Cleanup:
		return cl.GroupCleanupTest(ctx, r.Group)
	case r.Planned:
		return c.GroupPlannedFailover(ctx, r.Group, r.Options, clk, log)
	}
	return cl.GroupFailover(ctx, r.Group, r.Options)
}

// IsInvalid reports whether err is a bad request (ErrInvalid, or a site's
// refusal of one).
func IsInvalid(err error) bool {
	var se *SiteError
	return errors.Is(err, ErrInvalid) || errors.As(err, &se) && se.Code == "invalid"
}

// StateText is the state as a table shows it, with a full sync's
// progress: "initial-sync 42%".
func (s Status) StateText() string {
	if s.Progress != nil && s.Progress.Total > 0 {
		return fmt.Sprintf("%s %d%%", s.State, s.Progress.Done*100/s.Progress.Total)
	}
	return s.State
}

// LagText is the lag as a table shows it: "1.5s", "-" before the first
// acknowledged cut.
func (s Status) LagText() string {
	if s.LastCut == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fs", s.LagSeconds)
}
