package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/catalog/pgtest"
	"lifeboat/internal/clock"
	"lifeboat/internal/policy"
	"lifeboat/internal/schedule"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// BenchmarkControlPlane is the catalog and scheduler at scale: 1,000
// machines under 10 policies, 100,000 recovery points, and 100 agents as
// real API clients (heartbeat, claim) beside operators listing machines
// with their RPO state and a machine's points (4 operators, back to back).
// It reports the p50/p99 of
// both listings, the scheduler's tick and the process's peak RSS (server
// and clients share the process, so RSS is an upper bound).
//
//	go test -run XXX -bench ControlPlane -benchtime 1x ./internal/server
func BenchmarkControlPlane(b *testing.B) {
	for _, engine := range []catalog.Engine{catalog.SQLite, catalog.Postgres} {
		b.Run(string(engine), func(b *testing.B) {
			ctx := context.Background()
			dsn := filepath.Join(b.TempDir(), "catalog.db")
			if engine == catalog.Postgres {
				dsn = pgtest.Database(b)
			}
			cat, err := catalog.Open(ctx, dsn)
			if err != nil {
				b.Fatal(err)
			}
			defer cat.Close()
			now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			populate(b, cat, now)
			fc := clock.NewFake(now)
			srv := httptest.NewServer((&api.Server{Catalog: cat, Clock: fc}).Handler())
			defer srv.Close()
			admin, _ := api.NewSecret()
			cat.AddToken(ctx, "bench-admin", catalog.RoleAdmin, api.HashToken(admin), now)
			agents := make([]string, 100)
			for i := range agents {
				agents[i], _ = api.NewSecret()
				cat.AddToken(ctx, fmt.Sprintf("hv%03d", i), catalog.RoleAgent, api.HashToken(agents[i]), now)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
			call := func(token, method, path string) (time.Duration, error) {
				req, _ := http.NewRequest(method, srv.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					return 0, err
				}
				// Read, not decoded: a dashboard decodes in the browser,
				// not on the server's cores.
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					return 0, fmt.Errorf("%s %s: %s", method, path, resp.Status)
				}
				return time.Since(start), nil
			}

			sched := &Scheduler{Catalog: cat}
			b.ResetTimer()
			for range b.N {
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var mu sync.Mutex
				var listMachines, listPoints []time.Duration
				var firstErr error
				fail := func(err error) {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				// 100 agents poll for jobs every second and heartbeat every
				// 10 s, twice as often as real agents (2 s, 30 s).
				for a, tok := range agents {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(time.Duration(a) * 10 * time.Millisecond) // spread
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							paths := []string{"/v1/agent/claim"}
							if i%10 == 0 {
								paths = append(paths, "/v1/agent/heartbeat")
							}
							for _, path := range paths {
								if _, err := call(tok, "POST", path); err != nil {
									fail(err)
									return
								}
							}
							time.Sleep(time.Second)
						}
					}()
				}
				// 4 operators list, as a dashboard would.
				for o := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							d, err := call(admin, "GET", "/v1/machines")
							if err != nil {
								fail(err)
								return
							}
							m := fmt.Sprintf("m%04d", (o*250+i*7)%1000)
							d2, err := call(admin, "GET", "/v1/machines/"+m+"/points?limit=100")
							if err != nil {
								fail(err)
								return
							}
							mu.Lock()
							listMachines = append(listMachines, d)
							listPoints = append(listPoints, d2)
							mu.Unlock()
						}
					}()
				}
				// The first tick catches up: every machine's slot has passed
				// (they were protected 30 days ago), so it queues a backup
				// of each; later ticks are the steady state.
				start := time.Now()
				rep, err := sched.Tick(ctx, now)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "catch-up-tick-ms")
				b.ReportMetric(float64(len(rep.Queued)), "catch-up-queued")
				var ticks []time.Duration
				for t := 1; t <= 30; t++ {
					start := time.Now()
					if _, err := sched.Tick(ctx, now.Add(time.Duration(t)*10*time.Second)); err != nil {
						b.Fatal(err)
					}
					ticks = append(ticks, time.Since(start))
				}
				time.Sleep(10 * time.Second)
				close(stop)
				wg.Wait()
				if firstErr != nil {
					b.Fatal(firstErr)
				}
				report(b, "list-machines", listMachines)
				report(b, "list-points", listPoints)
				report(b, "tick", ticks)
				b.ReportMetric(float64(len(listMachines)), "machine-lists")
			}
			b.StopTimer()
			b.ReportMetric(peakRSSMiB(), "peak-RSS-MiB")
		})
	}
}

func report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		b.Fatalf("no %s samples", name)
	}
	slices.Sort(ds)
	q := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
}

// populate makes 1,000 machines under 10 policies and 3 tiers, with 100
// points each, the newest a few minutes to a few hours old.
func populate(b *testing.B, cat *catalog.Catalog, now time.Time) {
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(cat.PutVault(ctx, catalog.Vault{Name: "local", URL: "/srv/vault"}, now))
	for i, rpo := range []time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour} {
		must(cat.PutTier(ctx, schedule.Tier{Name: fmt.Sprintf("t%d", i), RPO: rpo}, now))
	}
	for i := range 10 {
		must(cat.PutPolicy(ctx, catalog.Policy{Name: fmt.Sprintf("p%d", i), Schedule: schedule.Spec{Every: time.Duration(i+1) * time.Hour, Stagger: 30 * time.Minute},
			Keep: policy.Retention{KeepDaily: 7}, Consistency: "crash", Vault: "local"}, now))
	}
	points := make([]catalog.Point, 0, 100_000)
	for m := range 1000 {
		name := fmt.Sprintf("m%04d", m)
		spec := `{"disks":[{"name":"root","path":"/img/` + name + `.raw"}]}`
		must(cat.AddMachine(ctx, catalog.Machine{Name: name, Agent: "hv" + strconv.Itoa(m%100), Spec: json.RawMessage(spec)}, now.Add(-30*24*time.Hour)))
		must(cat.Protect(ctx, name, fmt.Sprintf("p%d", m%10), fmt.Sprintf("t%d", m%3), now.Add(-30*24*time.Hour)))
		for p := range 100 {
			points = append(points, catalog.Point{Vault: "local", ID: fmt.Sprintf("%s-%03d", name, p), Machine: name,
				Time: now.Add(-time.Duration(p*6+m%5) * time.Hour), Consistency: "crash", Size: 4 << 30})
		}
	}
	for i := 0; i < len(points); i += 10_000 {
		must(cat.RecordPoints(ctx, points[i:i+10_000]))
	}
}

func peakRSSMiB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
