package replicate

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
)

// Rescan is how often Supervise rereads which machines are enabled.
var Rescan = 2 * time.Second

// Supervise replicates every machine enabled on this host until ctx ends,
// as RunMachines does — a group's members together, every other machine
// on its own — and follows the configuration while it runs: a machine
// enabled (replicate enable) starts replicating within Rescan, one
// disabled or changed stops (and restarts with its new settings). A
// runner that cannot start (its site was removed) is tried again at the
// next rescan. `replicate run` and `lifeboat agent --replicate` run it.
func Supervise(ctx context.Context, cfg *Config, template Runner) error {
	type unit struct {
		sig    string
		cancel context.CancelFunc
		done   chan struct{}
	}
	running := map[string]*unit{}
	defer func() {
		for _, u := range running {
			u.cancel()
			<-u.done
		}
	}()
	for {
		ms, err := cfg.Machines()
		if err != nil {
			template.log().Error("reading the replicated machines", "err", err)
		} else {
			want := units(ms)
			for key, u := range running {
				select {
				case <-u.done:
					delete(running, key) // ended by itself: restarted below
					continue
				default:
				}
				if w, ok := want[key]; !ok || signature(w) != u.sig {
					u.cancel()
					<-u.done
					delete(running, key)
				}
			}
			for key, members := range want {
				if running[key] != nil {
					continue
				}
				uctx, cancel := context.WithCancel(ctx)
				u := &unit{sig: signature(members), cancel: cancel, done: make(chan struct{})}
				running[key] = u
				go func() {
					defer close(u.done)
					if err := RunMachines(uctx, members, template); err != nil && uctx.Err() == nil {
						template.log().Error("replication cannot start", "machines", key, "err", err)
					}
				}()
			}
		}
		t := time.NewTimer(Rescan)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// units are the machines that replicate together: each group ("group:"
// and its name), and every other machine alone.
func units(ms []Machine) map[string][]Machine {
	out := map[string][]Machine{}
	for _, m := range ms {
		key := "machine:" + m.Name
		if m.Group != "" {
			key = "group:" + m.Group
		}
		out[key] = append(out[key], m)
	}
	return out
}

func signature(ms []Machine) string {
	b, _ := json.Marshal(ms)
	return string(b)
}

func (r *Runner) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}
