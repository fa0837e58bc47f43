package replica

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeboat/internal/testenv"
)

// Fuzz targets for what a replication target reads from the network and
// from its journal (issue 10, "Proof"): batches and machine specs.

// FuzzBatch: ReadBatch and ReadHeader refuse a batch as torn or return
// records that lie inside it; neither panics, and both cost what the
// batch weighs (plus ReadBatch's fixed read buffer).
func FuzzBatch(f *testing.F) {
	h := Header{Seq: 3, Cut: t0, Consistency: "crash"}
	f.Add(batch(f, h, func(bw *BatchWriter) {
		bw.Data(0, 4096, bytes.Repeat([]byte{7}, 100))
		bw.Zero(1, 1<<20, 1<<20)
	}))
	f.Add(batch(f, h, func(*BatchWriter) {}))
	f.Add(append(append([]byte{}, batchMagic[:]...), 0, 0x10, 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		testenv.CheckAlloc(t, len(data), 16, 0, func() { ReadHeader(bytes.NewReader(data)) })
		var recs []Record
		var err error
		// bufio's 1 MiB read buffer is ReadBatch's fixed cost.
		testenv.CheckAlloc(t, len(data), 64, 1<<20+4096, func() { _, recs, err = ReadBatch(bytes.NewReader(data)) })
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Off < 0 || r.Len < 0 || !r.Zero && (r.Len > MaxRecord || r.FileOff < 0 || r.FileOff+r.Len > int64(len(data))) {
				t.Fatalf("record %+v outside a batch of %d bytes", r, len(data))
			}
		}
	})
}

// FuzzSpec: a machine spec as the target's API receives it is refused, or
// names a machine and disks that are single local path elements (they
// become directories and files under the target's directory).
func FuzzSpec(f *testing.F) {
	f.Add([]byte(`{"machine":"m1","disks":[{"name":"a","size":1048576}],"definition":{"name":"m1"}}`))
	f.Add([]byte(`{"machine":"../m","disks":[{"name":"a/b","size":1}]}`))
	f.Add([]byte(`{"machine":"m","disks":[{"name":"a","size":1},{"name":"a","size":2}],"seed":{"a":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec Spec
		var err error
		testenv.CheckAlloc(t, len(data), 64, 0, func() {
			if err = json.NewDecoder(bytes.NewReader(data)).Decode(&spec); err == nil {
				err = spec.Validate()
			}
		})
		if err != nil {
			return
		}
		for _, name := range append([]string{spec.Machine}, diskNames(spec)...) {
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") || filepath.Base(name) != name || !filepath.IsLocal(name) {
				t.Fatalf("spec accepted with name %q", name)
			}
		}
	})
}

func diskNames(s Spec) []string {
	var n []string
	for _, d := range s.Disks {
		n = append(n, d.Name)
	}
	return n
}

// FuzzMachineState: a machine's state files on the target (spec.json and
// base.json) are refused, or give a spec Register would have accepted,
// for the machine whose directory holds them.
func FuzzMachineState(f *testing.F) {
	f.Add([]byte(`{"machine":"m1","disks":[{"name":"a","size":1048576}]}`), []byte(`{"cut":{"seq":3}}`))
	f.Add([]byte(`{"machine":"m2","disks":[{"name":"../../etc/a","size":1}]}`), []byte(`{}`))
	dir := filepath.Join(f.TempDir(), "m1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, spec, base []byte) {
		if os.WriteFile(filepath.Join(dir, "spec.json"), spec, 0o600) != nil || os.WriteFile(filepath.Join(dir, "base.json"), base, 0o600) != nil {
			t.Fatal("writing the state files")
		}
		var m *machine
		var err error
		// Folding names a batch to finish folding: none is there.
		testenv.CheckAlloc(t, len(spec)+len(base), 64, 0, func() { m, err = loadMachine(dir) })
		if err != nil {
			return
		}
		if m.spec.Validate() != nil || m.spec.Machine != "m1" {
			t.Fatalf("state of m1 read as %+v", m.spec)
		}
	})
}
