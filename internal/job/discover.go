package job

import "path/filepath"

// Discover asks an agent for the running QEMU machines of its host
// (internal/discover): their QMP sockets, names, guest agent sockets and
// disks, as candidates for `lifeboat machine add --qmp`.
type Discover struct {
	// Under keeps only the sockets under this directory.
	Under string `json:"under,omitempty"`
}

// Validate reports the first thing wrong with d.
func (d Discover) Validate() error {
	if d.Under != "" && !filepath.IsAbs(d.Under) {
		return invalid("under", "directory %q is not absolute", d.Under)
	}
	return nil
}
