package replica

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"lifeboat/internal/boot"
	"lifeboat/internal/nbd"
	"lifeboat/internal/qmp"
	"lifeboat/internal/recovery"
)

// FailoverOptions say what to fail over to and how.
type FailoverOptions struct {
	// Point is "latest", "latest-app", a point ID or an RFC 3339 time.
	Point string `json:"point,omitempty"`
	// Test starts an isolated copy (no network) while replication goes
	// on; CleanupTest removes it.
	Test bool `json:"test,omitempty"`
	// DisksOnly writes the point's disks as raw images into To, with the
	// failed-over definition, and starts nothing.
	DisksOnly bool   `json:"disks_only,omitempty"`
	To        string `json:"to,omitempty"`
	// Suffix is added to the machine's name ("-dr" when empty, nothing
	// when "none": a fail-back under the machine's original name).
	Suffix string `json:"suffix,omitempty"`
	// Accel is "tcg" (default) or "kvm".
	Accel string `json:"accel,omitempty"`
	// Cut, when not 0, fails over to exactly this cut of the journal (any
	// cut is consistent, not only the points): a group failover's share.
	Cut uint64 `json:"cut,omitempty"`
	// Name, when set, names the failed-over machine (a fail-back: its
	// original name, which a definition without a name does not hold).
	Name string `json:"name,omitempty"`
	// ExportNBD, when set (unix:PATH or HOST:PORT on the site's host),
	// starts no machine: the failover's disks are served there over NBD,
	// writable, each an export named after the disk, for another
	// hypervisor to boot (export.go).
	ExportNBD string `json:"export_nbd,omitempty"`
}

// FailedDisk is one disk of a failed-over machine.
type FailedDisk struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Format string `json:"format"`
	// NBD is the disk's NBD URI when the failover serves its disks
	// (FailoverOptions.ExportNBD).
	NBD string `json:"nbd,omitempty"`
}

// Failover is a failed-over machine, as recorded in its failover.json.
type Failover struct {
	Machine    string          `json:"machine"`
	Name       string          `json:"name"`
	Point      Point           `json:"point"`
	Test       bool            `json:"test,omitempty"`
	Disks      []FailedDisk    `json:"disks"`
	Definition json.RawMessage `json:"definition"`
	// PID and QMP are the started machine's, or the NBD server's that
	// serves its disks when Export is set (where it listens).
	PID     int    `json:"pid,omitempty"`
	QMP     string `json:"qmp,omitempty"`
	Export  string `json:"export_nbd,omitempty"`
	Console string `json:"console,omitempty"`
	// Seconds is how long the disks took to be ready to boot.
	Seconds float64 `json:"seconds"`
	// Batches is how many journal batches were applied over the base, or
	// over the checkpoint at cut Checkpoint when not 0.
	Batches    int    `json:"batches"`
	Checkpoint uint64 `json:"checkpoint,omitempty"`
	// Committed: the disks were made standalone (Commit); the base is free
	// to fold again.
	Committed bool `json:"committed,omitempty"`
}

// Failover materialises a point of a machine and, unless opts.DisksOnly,
// starts the machine from its stored definition with the target suffix
// under TCG (or KVM). The disks are qcow2 overlays over the newest
// checkpoint at or before the point (or the base images) with the
// journal's batches after it up to the point written into them: the work
// is bounded by CheckpointEvery, not the history or the disks' size. While
// any failover of a machine exists its base is not folded. A test failover
// leaves replication running; a real one stops the replica from taking
// more batches until it is cleaned up.
func (s *Store) Failover(ctx context.Context, name string, opts FailoverOptions) (*Failover, error) {
	start := s.clock.Now()
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	if opts.DisksOnly && opts.To == "" {
		return nil, fmt.Errorf("%w: disks-only failover needs a directory to write the disks to", ErrInvalid)
	}
	if opts.ExportNBD != "" {
		if opts.DisksOnly {
			return nil, fmt.Errorf("%w: --export-nbd serves the failover's overlays: it does not go with --disks-only", ErrInvalid)
		}
		if _, err := checkExportListen(opts.ExportNBD); err != nil {
			return nil, err
		}
	}
	suffix := opts.Suffix
	switch suffix {
	case "":
		suffix = "-dr"
	case "none": // failing back under the original name
		suffix = ""
	}
	m.mu.Lock()
	if !opts.Test && !opts.DisksOnly {
		// From here no batch is admitted or kept (refuseFailedOver);
		// after, the failover's record refuses them, or, if it failed,
		// replication goes on.
		m.failingOver++
		defer func() {
			m.mu.Lock()
			m.failingOver--
			m.mu.Unlock()
		}()
	}
	pt, err := Choose(m.points(s.clock), opts.Point)
	if opts.Cut != 0 {
		pt, err = m.exactCut(opts.Cut)
	}
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	def := m.spec.Definition
	if len(def) == 0 {
		names := make([]string, len(m.spec.Disks))
		for i, d := range m.spec.Disks {
			names[i] = d.Name
		}
		def = recovery.DefaultDefinition(m.spec.Machine, names, nil)
	}
	if opts.Test {
		suffix += "-test"
	}
	fo := &Failover{Machine: name, Name: recovery.RestoredMachineName(def, name, suffix), Point: pt, Test: opts.Test}
	if opts.Name != "" && !opts.Test {
		if err := recovery.ValidName("machine", opts.Name); err != nil {
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		fo.Name = opts.Name
	}
	dirName := fo.Name
	if opts.DisksOnly {
		dirName = ".export-" + randomHex()
	}
	fdir := filepath.Join(m.dir, "failover", dirName)
	// The directory's existence holds off folding (the overlays' backing,
	// or the copy's source, is the base).
	if err := os.Mkdir(fdir, 0o700); err != nil {
		m.mu.Unlock()
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s is already failed over as %s: clean it up first", ErrFailedOver, name, fo.Name)
		}
		return nil, fmt.Errorf("failing over %s: %w", name, err)
	}
	from, batches := m.startFor(pt.ID)
	disks := m.spec.Disks
	m.mu.Unlock()
	fo.Batches, fo.Checkpoint = len(batches), from
	source := func(d DiskSpec) (string, string) { return m.startSource(from, d.Name) }

	ok := false
	defer func() {
		if !ok || opts.DisksOnly {
			os.RemoveAll(fdir)
		}
	}()
	if opts.DisksOnly {
		if err := os.MkdirAll(opts.To, 0o700); err != nil {
			return nil, fmt.Errorf("failover directory: %w", err)
		}
		to, err := filepath.Abs(opts.To)
		if err != nil {
			return nil, err
		}
		if err := writeRawDisks(ctx, source, disks, batches, to); err != nil {
			return nil, fmt.Errorf("writing the disks of %s at point %d: %w", name, pt.ID, err)
		}
		for _, d := range disks {
			fo.Disks = append(fo.Disks, FailedDisk{Name: d.Name, File: filepath.Join(to, d.Name+".raw"), Format: "raw"})
		}
	} else {
		if err := writeOverlays(ctx, source, disks, batches, fdir, 0); err != nil {
			return nil, fmt.Errorf("materialising the disks of %s at point %d: %w", name, pt.ID, err)
		}
		for _, d := range disks {
			fo.Disks = append(fo.Disks, FailedDisk{Name: d.Name, File: filepath.Join(fdir, d.Name+".qcow2"), Format: "qcow2"})
		}
	}
	rdisks := make([]recovery.RestoredDisk, len(fo.Disks))
	for i, d := range fo.Disks {
		rdisks[i] = recovery.RestoredDisk{Name: d.Name, File: d.File, Format: d.Format}
	}
	rd, err := recovery.RestoredDefinition(def, rdisks, recovery.RestoreOptions{Suffix: suffix, NewMACs: opts.Test})
	if err != nil {
		return nil, err
	}
	fo.Definition = rd.JSON
	fo.Seconds = s.clock.Now().Sub(start).Seconds()
	if opts.DisksOnly {
		if err := os.WriteFile(filepath.Join(opts.To, fo.Name+".json"), rd.JSON, 0o600); err != nil {
			return nil, fmt.Errorf("writing the definition: %w", err)
		}
		ok = true
		return fo, nil
	}
	if opts.ExportNBD != "" {
		err = serveDisks(ctx, fo, fdir, opts.ExportNBD)
	} else {
		err = startMachine(ctx, fo, fdir, opts)
	}
	if err != nil {
		return nil, err
	}
	if err := WriteJSON(filepath.Join(fdir, "failover.json"), fo); err != nil {
		stopMachine(fo)
		stopExport(fo)
		return nil, err
	}
	ok = true
	return fo, nil
}

// Failovers lists a machine's active failovers.
func (s *Store) Failovers(ctx context.Context, name string) ([]Failover, error) {
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failoverRecords()
}

func (m *machine) failoverRecords() ([]Failover, error) {
	names, err := m.failovers()
	if err != nil {
		return nil, err
	}
	var out []Failover
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(m.dir, "failover", n, "failover.json"))
		if err != nil {
			continue // being made, or a disks-only export
		}
		var fo Failover
		if json.Unmarshal(data, &fo) == nil {
			out = append(out, fo)
		}
	}
	return out, nil
}

// CleanupTest stops and removes a machine's test failover; the replica is
// untouched.
func (s *Store) CleanupTest(ctx context.Context, name string) (*Failover, error) {
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fos, err := m.failoverRecords()
	if err != nil {
		return nil, err
	}
	for _, fo := range fos {
		if !fo.Test {
			continue
		}
		stopMachine(&fo)
		stopExport(&fo)
		if err := os.RemoveAll(filepath.Join(m.dir, "failover", fo.Name)); err != nil {
			return nil, fmt.Errorf("removing test failover %s: %w", fo.Name, err)
		}
		if fo.QMP != "" {
			os.RemoveAll(filepath.Dir(fo.QMP))
		}
		return &fo, nil
	}
	return nil, fmt.Errorf("%w: %s has no test failover", ErrNotFound, name)
}

// Commit makes a machine's (real) failover final: its disks become
// standalone images — streamed from the base inside the running machine
// (block-stream), or rebased offline (qemu-img rebase) when it is not
// running — so they no longer read the base, which may fold again. The
// replica still takes no cuts: the machine runs here now.
func (s *Store) Commit(ctx context.Context, name string) (*Failover, error) {
	m, err := s.machine(name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	fos, err := m.failoverRecords()
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var fo *Failover
	for i := range fos {
		if !fos[i].Test {
			fo = &fos[i]
		}
	}
	if fo == nil {
		return nil, fmt.Errorf("%w: %s is not failed over (a test failover is not committed: clean it up)", ErrNotFound, name)
	}
	if fo.Committed {
		return fo, nil
	}
	if err := standalone(ctx, fo); err != nil {
		return nil, fmt.Errorf("committing the failover of %s: %w", name, err)
	}
	fo.Committed = true
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := WriteJSON(filepath.Join(m.dir, "failover", fo.Name, "failover.json"), fo); err != nil {
		return nil, err
	}
	return fo, nil
}

// standalone copies what each overlay reads from the base into it.
func standalone(ctx context.Context, fo *Failover) error {
	var mon *qmp.Monitor
	if fo.QMP != "" {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		mon, _ = qmp.Dial(dctx, fo.QMP)
		cancel()
	}
	if mon == nil { // not running: offline
		for _, d := range fo.Disks {
			if out, err := exec.CommandContext(ctx, "qemu-img", "rebase", "-q", "-f", "qcow2", "-b", "", d.File).CombinedOutput(); err != nil {
				return fmt.Errorf("making %s standalone: %v: %s", d.File, err, out)
			}
		}
		return nil
	}
	defer mon.Close()
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		return err
	}
	for i, d := range fo.Disks {
		node := ""
		for _, n := range nodes {
			if n.Driver == "qcow2" && n.File == d.File {
				node = n.NodeName
			}
		}
		if node == "" {
			return fmt.Errorf("disk %s: the running machine has no node for %s", d.Name, d.File)
		}
		if err := mon.BlockStream(ctx, fmt.Sprintf("lbcommit-%d", i), node); err != nil {
			return fmt.Errorf("disk %s: %w", d.Name, err)
		}
	}
	return nil
}

// diskWriter is where a batch's records go: a base image or an overlay.
type diskWriter interface {
	WriteAt(ctx context.Context, p []byte, off int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
}

type fileWriter struct{ b *nbd.FileBackend }

func (f fileWriter) WriteAt(ctx context.Context, p []byte, off int64) error {
	_, err := f.b.WriteAt(p, off)
	return err
}

func (f fileWriter) WriteZeroes(ctx context.Context, off, length int64) error {
	return f.b.WriteZeroes(ctx, off, length, false)
}

type nbdWriter struct{ c *nbd.Client }

func (n nbdWriter) WriteAt(ctx context.Context, p []byte, off int64) error {
	return n.c.Pwrite(ctx, p, off, 0)
}

func (n nbdWriter) WriteZeroes(ctx context.Context, off, length int64) error {
	return n.c.WriteZeroes(ctx, off, length, 0)
}

// applyBatch writes the batch file's records through the disks' writers,
// up to 16 at a time: a batch's records never overlap, so their order
// does not matter (batches are applied one after the other).
func applyBatch(ctx context.Context, path string, writer func(disk int) diskWriter) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, recs, err := ReadBatch(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, r := range recs {
		g.Go(func() error {
			w := writer(r.Disk)
			var err error
			if r.Zero {
				err = w.WriteZeroes(ctx, r.Off, r.Len)
			} else {
				p := make([]byte, r.Len)
				if _, err := f.ReadAt(p, r.FileOff); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				err = w.WriteAt(ctx, p, r.Off)
			}
			if err != nil {
				return fmt.Errorf("applying %s to disk %d at %d: %w", filepath.Base(path), r.Disk, r.Off, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// writeOverlays makes dir/DISK.qcow2 over the image from gives for each
// disk (a path, absolute or relative to dir, and its format) and writes
// the batches into them through qemu-nbd. cluster, when not 0, is the
// overlays' qcow2 cluster size.
func writeOverlays(ctx context.Context, from func(DiskSpec) (string, string), disks []DiskSpec, batches []string, dir string, cluster int) error {
	writers := make([]diskWriter, len(disks))
	for i, d := range disks {
		overlay := filepath.Join(dir, d.Name+".qcow2")
		backing, format := from(d)
		// -u: the size is given, so the backing chain is not opened here
		// (qemu-nbd opens it next).
		args := []string{"create", "-q", "-u", "-f", "qcow2", "-F", format, "-b", backing}
		if cluster != 0 {
			args = append(args, "-o", fmt.Sprintf("cluster_size=%d", cluster))
		}
		out, err := exec.CommandContext(ctx, "qemu-img", append(args, overlay, strconv.FormatInt(d.Size, 10))...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("creating overlay %s: %v: %s", overlay, err, out)
		}
		if len(batches) == 0 {
			continue
		}
		c, stop, err := serveOverlay(ctx, overlay)
		if err != nil {
			return err
		}
		defer stop()
		writers[i] = nbdWriter{c}
	}
	for _, b := range batches {
		if err := applyBatch(ctx, b, func(disk int) diskWriter { return writers[disk] }); err != nil {
			return err
		}
	}
	for i, w := range writers {
		if w == nil {
			continue
		}
		if err := w.(nbdWriter).c.Flush(ctx); err != nil {
			return fmt.Errorf("flushing overlay of %s: %w", disks[i].Name, err)
		}
	}
	return nil
}

// serveOverlay runs qemu-nbd on a qcow2 image and connects to it. qemu-nbd
// exits when the connection closes; stop closes it and waits.
func serveOverlay(ctx context.Context, image string) (*nbd.Client, func(), error) {
	sockDir, err := os.MkdirTemp("", "lbfo")
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(sockDir, "s")
	cmd := exec.Command("qemu-nbd", "--format=qcow2", "--cache=unsafe", "--socket="+sock, image)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(sockDir)
		return nil, nil, fmt.Errorf("starting qemu-nbd on %s: %w", image, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error, waited bool) (*nbd.Client, func(), error) {
		if !waited {
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(sockDir)
		return nil, nil, fmt.Errorf("qemu-nbd on %s: %w (%s)", image, err, strings.TrimSpace(stderr.String()))
	}
	var c *nbd.Client
	for {
		c, err = nbd.Dial(ctx, "nbd+unix:///?socket="+sock)
		if err == nil {
			break
		}
		select {
		case err := <-exited: // received: fail must not wait for it again
			return fail(fmt.Errorf("exited: %v", err), true)
		case <-ctx.Done():
			return fail(ctx.Err(), false)
		case <-time.After(10 * time.Millisecond): // polling the socket until qemu-nbd listens
		}
	}
	return c, func() {
		c.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(sockDir)
	}, nil
}

// writeRawDisks writes each disk as to/DISK.raw: the image from gives
// copied sparsely (a checkpoint converted by qemu-img), then the batches
// applied.
func writeRawDisks(ctx context.Context, from func(DiskSpec) (string, string), disks []DiskSpec, batches []string, to string) error {
	writers := make([]diskWriter, len(disks))
	for i, d := range disks {
		out := filepath.Join(to, d.Name+".raw")
		src, format := from(d)
		if format == "raw" {
			if err := copySparse(ctx, src, out, d.Size); err != nil {
				return fmt.Errorf("disk %s: %w", d.Name, err)
			}
		} else if msg, err := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-f", format, "-O", "raw", src, out).CombinedOutput(); err != nil {
			return fmt.Errorf("disk %s: converting %s: %v: %s", d.Name, src, err, msg)
		}
		b, err := nbd.OpenFileBackend(out, false)
		if err != nil {
			return err
		}
		defer b.Close()
		writers[i] = fileWriter{b}
	}
	for _, b := range batches {
		if err := applyBatch(ctx, b, func(disk int) diskWriter { return writers[disk] }); err != nil {
			return err
		}
	}
	for _, w := range writers {
		if err := w.(fileWriter).b.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// copySparse copies the data extents of src (SEEK_DATA/SEEK_HOLE) into a
// new file dst of size bytes.
func copySparse(ctx context.Context, src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("finding data in %s: %w", src, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("finding holes in %s: %w", src, err)
		}
		hole = min(hole, size)
		for p := data; p < hole; {
			n := min(int64(len(buf)), hole-p)
			if _, err := in.ReadAt(buf[:n], p); err != nil && err != io.EOF {
				return err
			}
			if !allZero(buf[:n]) {
				if _, err := out.WriteAt(buf[:n], p); err != nil {
					return err
				}
			}
			p += n
		}
		off = hole
	}
	return out.Sync()
}

// startMachine starts the failed-over machine from fo.Definition in its
// own session (it outlives this process), and waits until its QMP socket
// answers.
func startMachine(ctx context.Context, fo *Failover, dir string, opts FailoverOptions) error {
	sockDir, err := os.MkdirTemp("", "lbdr")
	if err != nil {
		return err
	}
	fo.QMP = filepath.Join(sockDir, "qmp.sock")
	fo.Console = filepath.Join(dir, "console.log")
	def, kb, err := boot.Parse(fo.Definition)
	var argv []string
	if err == nil {
		network := boot.NetworkOf(def)
		if opts.Test {
			network = "none" // a test failover is isolated
		}
		argv, err = boot.Command(def, boot.Options{Accel: cmp.Or(opts.Accel, "tcg"), QMPSocket: fo.QMP, SerialLog: fo.Console,
			Network: network, Kernel: kb.Kernel, Initrd: kb.Initrd, Append: kb.Cmdline})
	}
	if err != nil {
		os.RemoveAll(sockDir)
		return fmt.Errorf("building the command line of %s: %w", fo.Name, err)
	}
	if err := startDetached(ctx, fo, dir, argv); err != nil {
		os.RemoveAll(sockDir)
		return err
	}
	return nil
}

var errExited = errors.New("exited")

// waitSocket waits until a unix socket accepts a connection (QEMU creates
// the file a moment before it listens), for at most 30 s; errExited when
// exited is closed first.
func waitSocket(ctx context.Context, path string, exited <-chan struct{}) error {
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return errors.New("did not open its QMP socket within 30 s")
		case <-time.After(20 * time.Millisecond): // polling until QEMU listens
		}
	}
}

// stopMachine kills a failed-over machine's QEMU, if the PID is still one.
func stopMachine(fo *Failover) {
	if fo.PID <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", fo.PID))
	if err != nil || !strings.Contains(string(cmdline), fo.Name) {
		return // gone, or the PID was reused
	}
	syscall.Kill(fo.PID, syscall.SIGKILL)
	for range 200 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", fo.PID)); err != nil {
			return
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", fo.PID)); err == nil && strings.Contains(string(st), ") Z ") {
			return // a zombie its parent has not reaped yet
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomHex() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
