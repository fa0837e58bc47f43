package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lifeboat/internal/agent"
	"lifeboat/internal/api"
	"lifeboat/internal/catalog"
	"lifeboat/internal/crypto"
	"lifeboat/internal/dashboard/browsertest"
	"lifeboat/internal/job"
	"lifeboat/internal/location"
	"lifeboat/internal/vault"
)

// A real server with its built-in agent backs up a machine into its
// default vault and copies the point to a second vault (made with
// --copy-of), as the machine's policy says; a prune counts the vault's
// packs. The machine's JSON shows its copy caught up, and /metrics has
// bytes read and stored, the dedup ratio, the vault's size and the copy
// lag with values that agree with what happened; the dashboard shows the
// copy current.
func TestMetricsAfterBackupAndCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cheap := vault.Options{KDF: crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, ChunkSize: 64 << 10, PackSize: 1 << 20}
	data := filepath.Join(dir, "data")
	noenv := func(string) string { return "" }
	// The copy shares the default vault's passphrase.
	pass := func(string) ([]byte, error) {
		pw, _ := DefaultVaultPassphrase(data, filepath.Join(data, DefaultVaultDir))
		return pw, nil
	}
	addr, _ := serve(t, Config{DataDir: data, Listen: "127.0.0.1:0", Host: "hv1", VaultOptions: cheap, Tick: 200 * time.Millisecond,
		Runner: &agent.Jobs{Options: cheap, Getenv: noenv, Passphrase: pass}})
	token, err := os.ReadFile(filepath.Join(data, AdminTokenFile))
	must(err)
	c := &api.Client{URL: "http://" + addr, Token: strings.TrimSpace(string(token))}

	pw, _ := pass("")
	src, err := location.Open(ctx, filepath.Join(data, DefaultVaultDir), noenv, pw, cheap)
	must(err)
	copyURL := filepath.Join(dir, "dr")
	store, err := location.Store(ctx, copyURL, true, noenv)
	must(err)
	_, err = vault.InitCopyOf(ctx, store, pw, src, cheap)
	must(err)

	must(c.Do(ctx, "PUT", "/v1/vaults/dr", catalog.Vault{URL: copyURL}, nil))
	must(c.Do(ctx, "PUT", "/v1/tiers/gold", api.TierJSON{RPO: api.Duration(time.Hour)}, nil))
	policy := api.PolicyJSON{Every: api.Duration(24 * time.Hour), Consistency: "crash", Vault: api.DefaultVault, CopyTo: "dr"}
	must(c.Do(ctx, "PUT", "/v1/policies/daily", policy, nil))
	img := filepath.Join(dir, "web1.raw")
	disk := make([]byte, 4<<20) // 1 MiB of noise, then zeros
	rand.Read(disk[:1<<20])
	must(os.WriteFile(img, disk, 0o600))
	must(c.Do(ctx, "POST", "/v1/machines", api.AddMachineJSON{Name: "web1", Source: job.Source{Disks: []job.Disk{{Name: "root", Path: img}}}}, nil))
	must(c.Do(ctx, "POST", "/v1/machines/web1/protect", api.ProtectJSON{Policy: "daily", Tier: "gold"}, nil))

	// waitKind waits for web1's (or the vault's) newest job of kind to succeed.
	waitKind := func(kind, query string) catalog.Job {
		t.Helper()
		for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var js []catalog.Job
			must(c.Do(ctx, "GET", "/v1/jobs?kind="+kind+query, nil, &js))
			if len(js) > 0 && js[0].State == catalog.Succeeded {
				return js[0]
			}
			if len(js) > 0 && js[0].State == catalog.Failed || time.Now().After(deadline) {
				t.Fatalf("%s jobs: %+v", kind, js)
			}
		}
	}
	var backup catalog.Job
	must(c.Do(ctx, "POST", "/v1/machines/web1/backup", nil, &backup))
	waitKind("backup", "&machine=web1")
	waitKind("copy", "&machine=web1")
	// A retention now: the scheduler's next tick queues the vault's first
	// prune, which counts its packs.
	policy.Keep = api.KeepJSON{Last: 5}
	must(c.Do(ctx, "PUT", "/v1/policies/daily", policy, nil))
	prune := waitKind("prune", "")

	var m api.MachineJSON
	must(c.Do(ctx, "GET", "/v1/machines/web1", nil, &m))
	if m.Copy == nil || m.Copy.Target != "dr" || m.Copy.Lag != 0 || m.Copy.Missed || !m.Copy.NewestCopied.Equal(m.LastPoint) || m.Copy.LastCopy.IsZero() {
		t.Fatalf("web1's copy after a copy job: %+v (last point %s)", m.Copy, m.LastPoint)
	}

	req, _ := http.NewRequest("GET", c.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	must(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	value := func(series string) float64 {
		t.Helper()
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				must(err)
				return f
			}
		}
		t.Fatalf("/metrics has no %s:\n%s", series, body)
		return 0
	}
	read := value(`lifeboat_backup_read_bytes_total{machine="web1"}`)
	newBytes := value(`lifeboat_backup_new_bytes_total{machine="web1"}`)
	stored := value(`lifeboat_backup_stored_bytes_total{machine="web1"}`)
	ratio := value(`lifeboat_backup_dedup_ratio{machine="web1"}`)
	size := value(`lifeboat_vault_pack_bytes{vault="default"}`)
	sizeAt := value(`lifeboat_vault_pack_bytes_timestamp_seconds{vault="default"}`)
	lag := value(`lifeboat_copy_lag_seconds{machine="web1",target="dr"}`)
	copied := value(`lifeboat_jobs_finished_total{kind="copy",result="succeeded"}`)
	report := fmt.Sprintf("read %v, new %v, stored %v, dedup %v, vault %v at %v, copy lag %v", read, newBytes, stored, ratio, size, sizeAt, lag)
	switch {
	case read < 1<<20 || read > 4<<20:
		t.Fatalf("bytes read out of the 4 MiB disk with 1 MiB of data: %s", report)
	case newBytes < 1<<20 || newBytes > read:
		t.Fatalf("new bytes for 1 MiB of noise: %s", report)
	case stored < 1<<20 || stored > 2<<20: // noise does not compress; sealing adds little
		t.Fatalf("stored bytes for 1 MiB of noise: %s", report)
	case ratio < 0 || ratio > 1 || ratio != 1-newBytes/read:
		t.Fatalf("dedup ratio is not 1 - new/read: %s", report)
	case size < stored:
		t.Fatalf("the vault holds fewer pack bytes than its one backup stored: %s", report)
	case int64(sizeAt) != prune.Finished.Unix():
		t.Fatalf("vault size timestamp %v, the prune ended %s", sizeAt, prune.Finished)
	case lag != 0 || copied != 1:
		t.Fatalf("copy: %s, %v copies succeeded", report, copied)
	}
	t.Log(report)

	// The dashboard shows the copy as current, on the machines page and
	// the machine's own.
	br := browsertest.Start(t)
	bctx, cancel := context.WithTimeout(br.Ctx, 60*time.Second) // as the other browser tests: a loaded CI host is slow
	defer cancel()
	must(chromedp.Do(bctx,
		chromedp.Navigate(c.URL+"/"),
		// Shown by the page's script: typing before it runs would submit
		// the form as plain HTML, losing the token.
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#token"), c.Token),
		chromedp.Click(chromedp.CSS("#login-form button")),
		// The overview drawn first: a click while the page still lays
		// itself out after the login can land beside the link (it did
		// under load, and the test waited for a page never asked for).
		chromedp.WaitVisible(chromedp.CSS(`#view [data-count="green"]`)),
		chromedp.Click(chromedp.CSS(`nav a[href="#/machines"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('#view h1')?.textContent === 'Machines'`),
		chromedp.WaitVisible(chromedp.CSS(`a[href="#/machines/web1"]`)),
	))
	if cp := browsertest.Text(t, bctx, `tbody tr:has(a[href="#/machines/web1"]) [data-copy]`); cp != "current (dr)" {
		t.Fatalf("the machines page shows web1's copy as %q", cp)
	}
	browsertest.Click(t, bctx, `a[href="#/machines/web1"]`)
	must(chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS("#machine-copy"))))
	if cp := browsertest.Text(t, bctx, `#machine-copy [data-copy="ok"]`); cp != "current (dr)" {
		t.Fatalf("web1's page shows its copy as %q", cp)
	}
}
