package recovery

import (
	"fmt"
	"strings"
)

// DiskPair is a definition disk and the point disk that holds its data.
type DiskPair struct {
	Def  string // the definition's name for it
	Disk string // the point's name for it
	// How the two were paired: "name" (the same name), "bus" (the n-th
	// disk of one bus with the n-th of the same bus) or "order" (the n-th
	// of those left, whatever their bus).
	By string
}

// DiskMatch pairs the disks of a definition with the disks of a point.
type DiskMatch struct {
	Pairs []DiskPair // in definition order
	// Unbacked are definition disks no point disk was found for.
	Unbacked []string
	// Undefined are point disks the definition has no disk for.
	Undefined []string
}

// GuessBus is the bus a disk name implies, the way QEMU and Linux name
// disks (virtio0 and vda, scsi0-0-0 and sda, ide0-hd0 and hda, ...), or ""
// when the name says nothing.
func GuessBus(name string) string {
	n := strings.ToLower(name)
	has := func(p string) bool { return strings.HasPrefix(n, p) }
	twoLetter := func(p string) bool { // vda, sdb1, hdc: a letter after the prefix
		return has(p) && len(n) > len(p) && n[len(p)] >= 'a' && n[len(p)] <= 'z'
	}
	switch {
	case has("virtio"), twoLetter("vd"):
		return "virtio"
	case has("nvme"):
		return "nvme"
	case has("sata"), has("ahci"):
		return "sata"
	case has("scsi"), twoLetter("sd"):
		return "scsi"
	case has("ide"), twoLetter("hd"):
		return "ide"
	}
	return ""
}

// MatchDisks pairs definition disks with point disks (named disks, in the
// point's order): first by equal name; then, among those left, the n-th
// disk of a bus with the n-th disk of the same bus (the definition's bus,
// the bus the point disk's name implies); then those left in order. So a
// definition naming root and data pairs with the disks virtio0 and
// virtio1 that QEMU's -drive if=virtio names, in that order.
func MatchDisks(def []DefinitionDisk, disks []string) DiskMatch {
	var m DiskMatch
	pair := make([]string, len(def)) // def index -> point disk
	how := make([]string, len(def))
	used := map[string]bool{}
	for i, d := range def {
		for _, n := range disks {
			if n == d.Name && !used[n] {
				pair[i], how[i], used[n] = n, "name", true
				break
			}
		}
	}
	// Known, equal buses first, then anything compatible, then any.
	passes := []struct {
		by string
		ok func(defBus, diskBus string) bool
	}{
		{"bus", func(a, b string) bool { return a != "" && a == b }},
		{"order", func(a, b string) bool { return a == "" || b == "" || a == b }},
		{"order", func(a, b string) bool { return true }},
	}
	for _, pass := range passes {
		for i, d := range def {
			if pair[i] != "" {
				continue
			}
			for _, n := range disks {
				if !used[n] && pass.ok(d.Bus, GuessBus(n)) {
					pair[i], how[i], used[n] = n, pass.by, true
					break
				}
			}
		}
	}
	for i, d := range def {
		if pair[i] == "" {
			m.Unbacked = append(m.Unbacked, d.Name)
			continue
		}
		m.Pairs = append(m.Pairs, DiskPair{Def: d.Name, Disk: pair[i], By: how[i]})
	}
	for _, n := range disks {
		if !used[n] {
			m.Undefined = append(m.Undefined, n)
		}
	}
	return m
}

// Disk returns the point disk paired with the definition disk def.
func (m DiskMatch) Disk(def string) (string, bool) {
	for _, p := range m.Pairs {
		if p.Def == def {
			return p.Disk, true
		}
	}
	return "", false
}

// Disagreement says how definition and point disks differ, or "" when
// every disk of each has the other's by name (or the definition names no
// disks at all).
func (m DiskMatch) Disagreement() string {
	if len(m.Pairs) == 0 && len(m.Unbacked) == 0 {
		return ""
	}
	var paired []string
	for _, p := range m.Pairs {
		if p.By != "name" {
			paired = append(paired, fmt.Sprintf("%s=%s (by %s)", p.Def, p.Disk, p.By))
		}
	}
	var parts []string
	if len(paired) > 0 {
		parts = append(parts, "paired "+strings.Join(paired, ", "))
	}
	if len(m.Unbacked) > 0 {
		parts = append(parts, fmt.Sprintf("no disk for the definition's %s", strings.Join(m.Unbacked, ", ")))
	}
	if len(m.Undefined) > 0 {
		parts = append(parts, fmt.Sprintf("the machine's %s not in the definition", strings.Join(m.Undefined, ", ")))
	}
	if len(parts) == 0 {
		return ""
	}
	return "the definition's disks are named unlike the machine's: " + strings.Join(parts, "; ")
}
