package job_test

import (
	"encoding/json"
	"strings"
	"testing"

	"lifeboat/internal/job"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/recovery"
	"lifeboat/internal/replica"
	"lifeboat/internal/restore"
)

// A restore is reported with every disk's image and format, the new MAC
// addresses and the domain defined, in one shape for restore --json and a
// restore job's result.
func TestRestoredReport(t *testing.T) {
	p := &recovery.Point{Machine: "web1"}
	p.ID[0] = 0xab
	r := &job.Restored{Point: p, Stats: restore.Stats{Bytes: 4096, WrittenBytes: 512},
		Targets: []restore.Target{{Disk: recovery.Disk{Name: "root"}, Path: "/r/root.qcow2", Format: "qcow2"},
			{Disk: recovery.Disk{Name: "data"}, Path: "/r/data.raw", Format: "raw"}},
		DefinitionPath: "/r/web1-dr.json",
		Definition:     &recovery.Restored{MACs: []recovery.MACChange{{NIC: 0, Old: "52:54:00:00:00:01", New: "52:54:00:aa:bb:cc"}}},
		Domain:         &libvirt.Domain{Name: "web1-dr", UUID: "u-1", Running: true}}
	raw, err := json.Marshal(r.Report())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got["point"] != p.ID.String() || got["machine"] != "web1" || got["definition"] != "/r/web1-dr.json" {
		t.Fatalf("report %s", raw)
	}
	disks, formats := got["disks"].(map[string]any), got["formats"].(map[string]any)
	if disks["root"] != "/r/root.qcow2" || disks["data"] != "/r/data.raw" || formats["root"] != "qcow2" || formats["data"] != "raw" {
		t.Fatalf("disks %v formats %v", disks, formats)
	}
	if d := got["domain"].(map[string]any); d["name"] != "web1-dr" || d["uuid"] != "u-1" || d["running"] != true {
		t.Fatalf("domain %v", d)
	}
	if macs := got["new_macs"].([]any); len(macs) != 1 || macs[0].(map[string]any)["New"] != "52:54:00:aa:bb:cc" {
		t.Fatalf("new_macs %v", got["new_macs"])
	}
	if st := got["stats"].(map[string]any); st["bytes"] == nil && st["Bytes"] == nil {
		t.Fatalf("stats %v", st)
	}

	// Without a definition or domain, neither is reported.
	bare := (&job.Restored{Point: p, Targets: r.Targets[:1]}).Report()
	raw, _ = json.Marshal(bare)
	got = nil
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["new_macs"]; ok {
		t.Fatalf("new_macs without a definition: %s", raw)
	}
	if _, ok := got["domain"]; ok || bare.Definition != "" {
		t.Fatalf("domain or definition without one: %s", raw)
	}
}

// A replica copy is reported with the point, the cut it holds and the
// point's ID, copied or found in the vault already.
func TestReplicaCopyReport(t *testing.T) {
	p := &recovery.Point{Machine: "db1", Consistency: recovery.App}
	p.ID[0] = 0xcd
	res := &job.ReplicaCopyResult{Point: p, Cut: replica.Point{ID: 42, Consistency: "app"}, AlreadyCopied: true}
	raw, err := json.Marshal(res.Report())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Point struct {
			ID, Machine, Consistency string
		} `json:"point"`
		Cut struct {
			ID uint64 `json:"id"`
		} `json:"cut"`
		AlreadyCopied *bool  `json:"already_copied"`
		ID            string `json:"id"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != p.ID.String() || got.Point.ID != p.ID.String() || got.Point.Machine != "db1" || got.Point.Consistency != "app" ||
		got.Cut.ID != 42 || got.AlreadyCopied == nil || !*got.AlreadyCopied {
		t.Fatalf("report %s", raw)
	}
	res.AlreadyCopied = false
	if raw, _ := json.Marshal(res.Report()); !strings.Contains(string(raw), `"already_copied":false`) {
		t.Fatalf("a new copy's report lacks already_copied: %s", raw)
	}
}
