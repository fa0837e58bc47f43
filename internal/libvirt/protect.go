package libvirt

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"lifeboat/internal/recovery"
)

// Listed is a domain as `lifeboat libvirt list` shows it: its disks and
// whether a vault holds points taken from it.
type Listed struct {
	Name    string       `json:"name"`
	UUID    string       `json:"uuid"`
	Running bool         `json:"running"`
	Disks   []ListedDisk `json:"disks"`
	// Readable is false when a disk cannot be backed up (Problems says why).
	Readable bool     `json:"readable"`
	Problems []string `json:"problems,omitempty"`
	// Machines are the machines whose points in the vault were read from
	// this domain, LastPoint the newest such point's time; both empty when
	// no vault was looked at or it holds none.
	Machines  []string   `json:"machines,omitempty"`
	LastPoint *time.Time `json:"last_point,omitempty"`
}

// StateText is "running" or "stopped".
func (l Listed) StateText() string {
	if l.Running {
		return "running"
	}
	return "stopped"
}

// DisksText is the domain's disks as TARGET(TYPE), space-separated.
func (l Listed) DisksText() string {
	var disks []string
	for _, d := range l.Disks {
		disks = append(disks, d.Target+"("+d.Type+")")
	}
	return strings.Join(disks, " ")
}

// Protection says which machines protect the domain and the time of their
// newest point, as libvirt list shows them; vaultGiven says whether a
// vault was looked at.
func (l Listed) Protection(vaultGiven bool) (by, last string) {
	switch {
	case !vaultGiven:
		return "(no vault given)", "-"
	case len(l.Machines) > 0:
		return strings.Join(l.Machines, ","), l.LastPoint.UTC().Format("2006-01-02 15:04:05")
	}
	return "unprotected", "-"
}

// ListedDisk is one disk of a listed domain.
type ListedDisk struct {
	Target string `json:"target"`
	Type   string `json:"type"`
	Source string `json:"source,omitempty"`
	Format string `json:"format,omitempty"`
}

// List describes every domain at the daemon, and which points (when
// points is not nil) protect it.
func List(ctx context.Context, uri string, points []*recovery.Point) ([]Listed, error) {
	c, err := Dial(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	doms, err := c.Domains(ctx)
	if err != nil {
		return nil, err
	}
	return Protection(doms, points), nil
}

// Protection pairs domains with the points taken from them: a point
// protects a domain when one of its disks was read from it (source
// "libvirt:DOMAIN#disk").
func Protection(doms []Domain, points []*recovery.Point) []Listed {
	out := make([]Listed, 0, len(doms))
	for _, d := range doms {
		l := Listed{Name: d.Name, UUID: d.UUID, Running: d.Running, Readable: true}
		for _, disk := range d.Disks {
			l.Disks = append(l.Disks, ListedDisk{Target: disk.Target, Type: disk.Type, Source: disk.Source, Format: disk.Format})
			if why := disk.Readable(); why != "" {
				l.Readable = false
				l.Problems = append(l.Problems, why)
			}
		}
		machines := map[string]bool{}
		for _, p := range points {
			if !fromDomain(p, d.Name) {
				continue
			}
			machines[p.Machine] = true
			if t := p.Time; l.LastPoint == nil || t.After(*l.LastPoint) {
				l.LastPoint = &t
			}
		}
		for m := range machines {
			l.Machines = append(l.Machines, m)
		}
		sort.Strings(l.Machines)
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func fromDomain(p *recovery.Point, name string) bool {
	for _, d := range p.Disks {
		if strings.HasPrefix(d.Source, "libvirt:"+name+"#") {
			return true
		}
	}
	return false
}

// Offer is a libvirt domain an agent offers to protect: what to give
// POST /v1/machines as its source to protect it.
type Offer struct {
	Domain   string   `json:"domain"`
	Running  bool     `json:"running"`
	Disks    []string `json:"disks"`
	Readable bool     `json:"readable"`
	Problems []string `json:"problems,omitempty"`
	// Source is the job.Source JSON that protects the domain.
	Source map[string]string `json:"source"`
}

// Offers lists the domains at the daemon uri as machines to protect, or
// says in one line why it cannot; nil when uri is the default and no
// daemon runs (most hosts run none).
func Offers(ctx context.Context, uri string) any {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	listed, err := List(ctx, uri, nil)
	if errors.Is(err, ErrNoDaemon) && uri == "" {
		return nil // no libvirt on this host
	}
	if err != nil {
		return map[string]any{"libvirt_error": err.Error()}
	}
	offers := make([]Offer, 0, len(listed))
	for _, l := range listed {
		o := Offer{Domain: l.Name, Running: l.Running, Readable: l.Readable, Problems: l.Problems,
			Source: map[string]string{"libvirt": l.Name}}
		if uri != "" {
			o.Source["connect"] = uri
		}
		for _, d := range l.Disks {
			o.Disks = append(o.Disks, d.Target)
		}
		offers = append(offers, o)
	}
	return map[string]any{"libvirt": offers}
}
