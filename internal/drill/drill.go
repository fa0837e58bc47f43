// Package drill records recovery drills: a point booted in a sandbox, the
// guest seen answering (or not), and the measured recovery time. Results
// are sealed objects drills/<id> in the vault that holds the point
// (docs/format.md, "Drill results"), so that `lifeboat points` can say
// which points are proven, when, and how fast they came back.
package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"lifeboat/internal/chunk"
	"lifeboat/internal/vault"
)

// Result is the outcome of one drill of one point.
type Result struct {
	Version int       `json:"version"`
	Point   string    `json:"point"` // the point's full ID
	Machine string    `json:"machine"`
	Time    time.Time `json:"time"` // when the drill was decided
	Host    string    `json:"host"`
	OK      bool      `json:"ok"`
	// RTOMS is the measured recovery time: from the decision to drill to
	// the guest answering the probe. Set only when OK.
	RTOMS int64 `json:"rto_ms,omitempty"`
	// BootMS is from the decision to the machine running.
	BootMS int64 `json:"boot_ms,omitempty"`
	// Probe says what was asked of the guest: "guest-agent",
	// "serial:REGEX" or "command:CMD".
	Probe string `json:"probe"`
	// Error says why a drill failed.
	Error string `json:"error,omitempty"`

	ID chunk.ID `json:"-"`
}

// Save stores r in v.
func Save(ctx context.Context, v *vault.Vault, r *Result) error {
	r.Version = 1
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding the drill result: %w", err)
	}
	id, err := v.SaveObject(ctx, vault.KindDrill, data)
	if err != nil {
		return fmt.Errorf("recording the drill of point %s: %w", r.Point, err)
	}
	r.ID = id
	return nil
}

// List reads every drill result in v. One that cannot be read is skipped,
// and named to warn (a planted or damaged object must not hide the rest).
func List(ctx context.Context, v *vault.Vault, warn func(string)) ([]*Result, error) {
	ids, foreign, err := v.ScanIDs(ctx, vault.KindDrill)
	if err != nil {
		return nil, err
	}
	for _, f := range foreign {
		warn(fmt.Sprintf("%s is not a drill result: skipped", f))
	}
	var out []*Result
	for _, id := range ids {
		data, err := v.LoadObject(ctx, vault.KindDrill, id)
		var r *Result
		if err == nil {
			r, err = parse(data)
		}
		if err != nil {
			warn(fmt.Sprintf("%s: skipped: %v", vault.ObjectName(vault.KindDrill, id), err))
			continue
		}
		r.ID = id
		out = append(out, r)
	}
	return out, nil
}

// parse reads a drill result's plaintext.
func parse(data []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", chunk.ErrCorrupt, err)
	}
	if r.Version != 1 {
		return nil, fmt.Errorf("version %d: %w", r.Version, vault.ErrNewerFormat)
	}
	return &r, nil
}

// Latest returns the newest result of each point, by point ID.
func Latest(results []*Result) map[string]*Result {
	out := map[string]*Result{}
	for _, r := range results {
		if cur, ok := out[r.Point]; !ok || r.Time.After(cur.Time) {
			out[r.Point] = r
		}
	}
	return out
}

// Summary is how `points` shows a point's latest drill: "-" (never
// drilled), "ok 12.3s 2h ago" or "FAILED 3d ago".
func Summary(r *Result, now time.Time) string {
	if r == nil {
		return "-"
	}
	ago := now.Sub(r.Time).Round(time.Second)
	age := ago.String()
	switch {
	case ago >= 48*time.Hour:
		age = fmt.Sprintf("%dd", int(ago.Hours()/24))
	case ago >= 2*time.Hour:
		age = fmt.Sprintf("%dh", int(ago.Hours()))
	case ago >= 2*time.Minute:
		age = fmt.Sprintf("%dm", int(ago.Minutes()))
	}
	if !r.OK {
		return "FAILED " + age + " ago"
	}
	return fmt.Sprintf("ok %.1fs %s ago", float64(r.RTOMS)/1000, age)
}
