// Package replicate is the source side of continuous replication: it
// names target sites, keeps which machines replicate where, and runs the
// replication of each (Runner): a consistent cut of all of a machine's
// disks every few seconds through QEMU dirty bitmaps, the changed extents
// read over NBD and shipped to the target site's replica server
// (internal/replica) as one batch per cut. docs/replication.md explains
// the choice of mechanism.
package replicate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"lifeboat/internal/recovery"
	"lifeboat/internal/replica"
)

// ErrInvalid marks errors in what was asked (bad input).
var ErrInvalid = errors.New("invalid replication request")

// ErrNotFound: no such site or replicated machine.
var ErrNotFound = errors.New("not found")

// Site is a target site, as `lifeboat site add` names it.
type Site struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	TokenFile string `json:"token_file"`
	CA        string `json:"ca,omitempty"`
}

// Validate checks a site: https, or http on a loopback address only (the
// token and the disks' data would cross the network in the clear).
func (s Site) Validate() error {
	if err := recovery.ValidName("site", s.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, err := url.Parse(s.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: site URL %q: want https://host:port", ErrInvalid, s.URL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%w: site URL %q: plain http is accepted for loopback addresses only; serve the replica with --cert and --key and use https://", ErrInvalid, s.URL)
		}
	default:
		return fmt.Errorf("%w: site URL %q: want https:// (or http:// on a loopback address)", ErrInvalid, s.URL)
	}
	if s.TokenFile == "" {
		return fmt.Errorf("%w: site %s needs a token file", ErrInvalid, s.Name)
	}
	if _, err := readToken(s.TokenFile); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if s.CA != "" {
		if _, err := os.Stat(s.CA); err != nil {
			return fmt.Errorf("%w: CA file: %v", ErrInvalid, err)
		}
	}
	return nil
}

func readToken(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading the site token: %w", err)
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", fmt.Errorf("site token file %s is empty", file)
	}
	return t, nil
}

// Machine is a machine replicated from this host.
type Machine struct {
	Name       string `json:"name"`
	QMP        string `json:"qmp"`
	GuestAgent string `json:"guest_agent,omitempty"`
	Target     string `json:"target"`
	// Policy: retention, crash- and app-consistent intervals.
	Policy replica.Policy `json:"policy"`
	// Every is how often a cut is taken and shipped (default 2 s): the RPO
	// is about this plus the time to ship a cut.
	Every time.Duration `json:"every,omitempty"`
	// Definition, when given, is stored at the target instead of the one
	// read from the running machine.
	Definition json.RawMessage `json:"definition,omitempty"`
	// Seed names, per disk, an image on the target site's host to start
	// the replica from (re-protection: the machine's old disks at its old
	// site); the first sync then sends only the blocks that differ.
	Seed map[string]string `json:"seed,omitempty"`
	// Origin is the original machine's name when this one is its
	// failed-over copy, protected back by Reprotect (failback finds it so).
	Origin string `json:"origin,omitempty"`
	// Group names the replication group the machine belongs to: its cuts
	// are taken together with the other members' (GroupRunner).
	Group string `json:"group,omitempty"`
	// Paused stops shipping (replicate pause): the runner takes no cuts
	// and stops the mirror; the dirty bitmap keeps recording, so resuming
	// sends only what was written meanwhile. Status says paused.
	Paused bool `json:"paused,omitempty"`
	// Capture is how writes are captured: CaptureMirror (QEMU's
	// write-blocking mirror into the source journal, falling back to
	// bitmap cuts when it fails) or CaptureBitmap (dirty-bitmap cuts);
	// empty is the default (Machine.capture).
	Capture string `json:"capture,omitempty"`
	// JournalLimit bounds the source journal's unshipped bytes in mirror
	// capture (DefaultJournalLimit when 0); hitting it falls back to
	// bitmap cuts until the mirror is started again.
	JournalLimit int64 `json:"journal_limit,omitempty"`
	// NBDServer, when set, is the address (unix:PATH) of an NBD server the
	// machine's QEMU already runs for others: lifeboat adds its exports to
	// it instead of starting QEMU's NBD server itself.
	NBDServer string `json:"nbd_server,omitempty"`
	// PreHook and PostHook are the operator's shell commands run around
	// the guest's freeze for an app-consistent cut, as backup's
	// --pre-hook and --post-hook (quiesce.Hook: without lifeboat's
	// secrets in their environment; HookTimeout each, 5 minutes when 0).
	// With hooks set, a cut is app-consistent only when the pre-hook
	// succeeded; the post-hook always runs.
	PreHook     string        `json:"pre_hook,omitempty"`
	PostHook    string        `json:"post_hook,omitempty"`
	HookTimeout time.Duration `json:"hook_timeout,omitempty"`
	// Managed marks a replication enabled through a lifeboat server
	// (Apply): the agent disables it when the server no longer lists it.
	Managed bool `json:"managed,omitempty"`
}

// Capture modes (Machine.Capture, Status.Capture).
const (
	CaptureBitmap = "bitmap"
	CaptureMirror = "mirror"
)

// capture is how m's writes are captured: m.Capture when set, else
// mirror capture (for a group member too: its group cuts are then one
// instant across the members' journals, groupmirror.go).
func (m Machine) capture() string {
	if m.Capture != "" {
		return m.Capture
	}
	return CaptureMirror
}

// DefaultJournalLimit is the source journal's size limit unless a machine
// says (Machine.JournalLimit).
const DefaultJournalLimit = 1 << 30

// DefaultEvery is how often a cut is taken unless a machine says.
const DefaultEvery = 2 * time.Second

// Validate checks a machine's replication settings.
func (m Machine) Validate() error {
	if err := recovery.ValidName("machine", m.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if m.QMP == "" {
		return fmt.Errorf("%w: machine %s: the QMP socket (--qmp) is required", ErrInvalid, m.Name)
	}
	if m.Target == "" {
		return fmt.Errorf("%w: machine %s: the target site (--target) is required", ErrInvalid, m.Name)
	}
	p := m.Policy
	switch {
	case p.Retention < 0 || p.CrashInterval < 0 || p.AppInterval < 0 || m.Every < 0:
		return fmt.Errorf("%w: machine %s: durations must not be negative", ErrInvalid, m.Name)
	case p.Retention > 0 && p.CrashInterval > p.Retention:
		return fmt.Errorf("%w: machine %s: crash-consistent interval %s is longer than the retention %s", ErrInvalid, m.Name, p.CrashInterval, p.Retention)
	case m.Capture != "" && m.Capture != CaptureBitmap && m.Capture != CaptureMirror:
		return fmt.Errorf("%w: machine %s: capture %q is neither %s nor %s", ErrInvalid, m.Name, m.Capture, CaptureBitmap, CaptureMirror)
	case m.JournalLimit < 0 || (m.JournalLimit > 0 && m.JournalLimit < 1<<20):
		return fmt.Errorf("%w: machine %s: the journal limit %d is under 1 MiB", ErrInvalid, m.Name, m.JournalLimit)
	case m.NBDServer != "" && !strings.HasPrefix(m.NBDServer, "unix:"):
		return fmt.Errorf("%w: machine %s: the NBD server address %q is not unix:PATH", ErrInvalid, m.Name, m.NBDServer)
	case (m.PreHook != "" || m.PostHook != "") && p.AppInterval <= 0:
		return fmt.Errorf("%w: machine %s: --pre-hook and --post-hook run around app-consistent cuts: give --app-interval", ErrInvalid, m.Name)
	case m.HookTimeout < 0:
		return fmt.Errorf("%w: machine %s: the hook timeout must not be negative", ErrInvalid, m.Name)
	case p.AppInterval > 0 && m.GuestAgent == "":
		return fmt.Errorf("%w: machine %s: app-consistent points need the guest agent's socket (--guest-agent)", ErrInvalid, m.Name)
	}
	if len(m.Definition) > 0 {
		if _, err := recovery.ParseDefinition(m.Definition); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

func (m Machine) every() time.Duration {
	if m.Every > 0 {
		return m.Every
	}
	return DefaultEvery
}

// Config is this host's replication settings, kept as JSON files under
// DIR/replication (DIR is the state directory, internal/lastseen.Dir):
// sites/NAME.json, machines/NAME.json, and the runners' state/NAME.json
// and status/NAME.json.
type Config struct {
	dir string
}

// OpenConfig returns the configuration under the state directory dir.
func OpenConfig(stateDir string) *Config {
	return &Config{dir: filepath.Join(stateDir, "replication")}
}

func (c *Config) path(kind, name string) string { return filepath.Join(c.dir, kind, name+".json") }

func (c *Config) put(kind, name string, v any) error {
	if err := os.MkdirAll(filepath.Join(c.dir, kind), 0o700); err != nil {
		return err
	}
	return replica.WriteJSON(c.path(kind, name), v)
}

func (c *Config) get(kind, name string, v any) error {
	data, err := os.ReadFile(c.path(kind, name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: no %s %q is configured on this host", ErrNotFound, strings.TrimSuffix(kind, "s"), name)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", c.path(kind, name), err)
	}
	return nil
}

func (c *Config) list(kind string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(c.dir, kind))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AddSite names a target site (replacing one of the same name).
func (c *Config) AddSite(s Site) error {
	if err := s.Validate(); err != nil {
		return err
	}
	var err error
	if s.TokenFile, err = filepath.Abs(s.TokenFile); err != nil {
		return err
	}
	if s.CA != "" {
		if s.CA, err = filepath.Abs(s.CA); err != nil {
			return err
		}
	}
	return c.put("sites", s.Name, s)
}

// Site returns a named site.
func (c *Config) Site(name string) (Site, error) {
	var s Site
	err := c.get("sites", name, &s)
	return s, err
}

// Sites lists the sites.
func (c *Config) Sites() ([]Site, error) { return all(c, "sites", c.Site) }

// Enable records a machine's replication; its site must exist.
func (c *Config) Enable(m Machine) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if _, err := c.Site(m.Target); err != nil {
		return fmt.Errorf("%w: target site %q: %v (add it with lifeboat site add)", ErrInvalid, m.Target, err)
	}
	var err error
	if m.QMP, err = filepath.Abs(m.QMP); err != nil {
		return err
	}
	if m.GuestAgent != "" {
		if m.GuestAgent, err = filepath.Abs(m.GuestAgent); err != nil {
			return err
		}
	}
	return c.put("machines", m.Name, m)
}

// SetPaused pauses (or resumes) the replication of the machine called
// name, or of every member of group; a group member is paused with its
// group only. The runners see it within a cycle.
func (c *Config) SetPaused(name, group string, paused bool) ([]string, error) {
	var ms []Machine
	switch {
	case group != "":
		var err error
		if ms, err = c.GroupMembers(group); err != nil {
			return nil, err
		}
	default:
		m, err := c.Machine(name)
		if err != nil {
			return nil, err
		}
		if m.Group != "" {
			return nil, fmt.Errorf("%w: %s replicates in group %s, whose members are cut together: pause or resume the group (--group %s)", ErrInvalid, name, m.Group, m.Group)
		}
		ms = []Machine{m}
	}
	var names []string
	for _, m := range ms {
		m.Paused = paused
		if err := c.put("machines", m.Name, m); err != nil {
			return names, err
		}
		names = append(names, m.Name)
	}
	return names, nil
}

// Machine returns a replicated machine's settings.
func (c *Config) Machine(name string) (Machine, error) {
	var m Machine
	err := c.get("machines", name, &m)
	return m, err
}

// Machines lists the replicated machines.
func (c *Config) Machines() ([]Machine, error) { return all(c, "machines", c.Machine) }

// all reads every entry of a kind.
func all[T any](c *Config, kind string, get func(string) (T, error)) ([]T, error) {
	names, err := c.list(kind)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, n := range names {
		v, err := get(n)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Disable forgets a machine's replication on this host (its settings,
// state and status).
func (c *Config) Disable(name string) error {
	if _, err := c.Machine(name); err != nil {
		return err
	}
	for _, kind := range []string{"state", "status", "machines"} {
		if err := os.Remove(c.path(kind, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
