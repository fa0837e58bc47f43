package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"lifeboat/internal/bytesize"
	"slices"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/backup"
	"lifeboat/internal/catalog"
	"lifeboat/internal/discover"
	"lifeboat/internal/job"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/location"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/secrets"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// Jobs runs the kinds of job lifeboat knows through internal/job — the
// code `lifeboat backup` runs — keeping each vault open (keys unlocked)
// between jobs, so a scheduled incremental pays no key derivation.
type Jobs struct {
	// Passphrase returns the passphrase of the vault at url.
	Passphrase func(url string) ([]byte, error)
	// Getenv supplies S3 settings and credentials.
	Getenv func(string) string
	// Executable is lifeboat's own binary (the thaw watchdog).
	Executable string
	// Vault options (clock, key-derivation cost for new slots).
	Options vault.Options
	// Seen is this host's record of the newest points per vault, for
	// rollback detection (as the CLI keeps it); nil keeps none.
	Seen *lastseen.Book

	mu     sync.Mutex
	vaults map[string]*openVault
	creds  map[string]secrets.Credential // from the server, by vault URL
}

// UseCredentials keeps the credentials the server sent with a job, for
// opening the vaults it names. A vault already open stays open.
func (r *Jobs) UseCredentials(creds map[string]secrets.Credential) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.creds == nil {
		r.creds = map[string]secrets.Credential{}
	}
	for url, c := range creds {
		r.creds[url] = c
	}
}

// openVault is one vault being opened or open: jobs wanting it wait for
// the one opening (key derivation takes a while) without holding up jobs
// of other vaults.
type openVault struct {
	once sync.Once
	v    *vault.Vault
	err  error
}

// vault returns the open vault at url, opening it the first time. A vault
// that failed to open is tried again by the next job.
func (r *Jobs) vault(ctx context.Context, url string) (*vault.Vault, error) {
	r.mu.Lock()
	ov, ok := r.vaults[url]
	if !ok {
		if r.vaults == nil {
			r.vaults = map[string]*openVault{}
		}
		ov = &openVault{}
		r.vaults[url] = ov
	}
	cred, kept := r.creds[url]
	r.mu.Unlock()
	ov.once.Do(func() {
		var pw []byte
		var err error
		if cred.Password != "" {
			pw = []byte(cred.Password)
		} else if pw, err = r.Passphrase(url); err != nil {
			ov.err = err
			return
		}
		getenv := r.Getenv
		if kept {
			getenv = cred.Getenv(r.Getenv)
		}
		if ov.v, err = location.Open(ctx, url, getenv, pw, r.Options); err != nil {
			ov.err = fmt.Errorf("opening vault %s: %w", url, err)
		}
	})
	if ov.err != nil {
		r.mu.Lock()
		if r.vaults[url] == ov {
			delete(r.vaults, url)
		}
		r.mu.Unlock()
		return nil, ov.err
	}
	return ov.v, nil
}

// Progress is a running backup's progress as the server shows it.
type Progress struct {
	DoneBytes  int64   `json:"done_bytes"`
	TotalBytes int64   `json:"total_bytes"`
	Rate       float64 `json:"bytes_per_second"`
	ETASeconds float64 `json:"eta_seconds,omitempty"`
}

// Text is the progress as a job list shows it: "42% 37.0 MiB/s ETA 12s";
// "-" when nothing is known yet.
func (p Progress) Text() string {
	if p.TotalBytes <= 0 {
		return "-"
	}
	s := fmt.Sprintf("%d%%", p.DoneBytes*100/p.TotalBytes)
	if p.Rate > 0 {
		s += " " + bytesize.Format(int64(p.Rate)) + "/s"
	}
	if p.ETASeconds > 0 {
		s += " ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	return s
}

// Run runs one job.
func (r *Jobs) Run(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	switch j.Kind {
	case "backup":
		return r.backup(ctx, j, rep)
	case "restore":
		return r.restore(ctx, j, rep)
	case "forget":
		return r.forget(ctx, j, rep)
	case "prune":
		return r.prune(ctx, j, rep)
	case "copy":
		return r.copy(ctx, j, rep)
	case "verify":
		return r.verify(ctx, j, rep)
	case "drill":
		return r.drill(ctx, j, rep)
	case "discover":
		return r.discover(ctx, j, rep)
	}
	return Outcome{}, fmt.Errorf("this agent does not run %q jobs", j.Kind)
}

func (r *Jobs) backup(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Backup
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("backup job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	rep.Log("info", fmt.Sprintf("backing up %s (%d disk(s)%s) into %s", spec.Machine, len(spec.Disks), map[bool]string{true: ", live"}[spec.QMP != ""], spec.Vault))
	p, err := job.RunBackup(ctx, v, spec, job.Env{Executable: r.Executable, Seen: r.Seen,
		Warn: func(s string) { rep.Log("warn", s) },
		Progress: func(p backup.Progress) {
			pr := Progress{DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes}
			if secs := p.Elapsed.Seconds(); secs > 0 {
				pr.Rate = float64(p.DoneBytes) / secs
				if pr.Rate > 0 && p.TotalBytes > p.DoneBytes {
					pr.ETASeconds = float64(p.TotalBytes-p.DoneBytes) / pr.Rate
				}
			}
			rep.Progress(pr)
		}})
	if p == nil {
		return Outcome{}, err
	}
	var stored, read int64
	for _, d := range p.Disks {
		stored += d.Stats.NewBytes
		read += d.Stats.ReadBytes
	}
	rep.Log("info", fmt.Sprintf("point %s committed: %s-consistent, %d new bytes, in %s", p.ID.Short(), p.Consistency, stored,
		(time.Duration(p.Stats.DurationMS)*time.Millisecond).String()))
	result, _ := json.Marshal(map[string]any{"point": p.ID.String(), "consistency": p.Consistency, "new_bytes": stored,
		"read_bytes": read, "stored_bytes": p.Stats.StoredBytes})
	vaultName := j.Vault
	if vaultName == "" {
		vaultName = spec.Vault
	}
	return Outcome{Result: result, Points: []catalog.Point{PointOf(vaultName, p)}}, err
}

// PointOf is a recovery point of the vault named vaultName as the catalog
// indexes it.
func PointOf(vaultName string, p *recovery.Point) catalog.Point {
	var sources []string
	for _, d := range p.Disks {
		if d.ChangeSource != "" && !slices.Contains(sources, d.ChangeSource) {
			sources = append(sources, d.ChangeSource)
		}
	}
	return catalog.Point{Vault: vaultName, ID: p.ID.String(), Machine: p.Machine, Time: p.Time,
		Consistency: string(p.Consistency), ChangeSource: strings.Join(sources, ","), Size: p.Size(), Notes: strings.Join(p.Notes, "; ")}
}

func (r *Jobs) restore(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Restore
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("restore job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	rep.Log("info", fmt.Sprintf("restoring %s point %s from %s", spec.Machine, spec.Point, spec.Vault))
	res, err := job.RunRestore(ctx, v, spec, job.Env{Executable: r.Executable, Seen: r.Seen,
		Warn: func(s string) { rep.Log("warn", s) },
		RestoreProgress: func(p restore.Progress) {
			pr := Progress{DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes}
			if secs := p.Elapsed.Seconds(); secs > 0 {
				pr.Rate = float64(p.DoneBytes) / secs
			}
			rep.Progress(pr)
		}})
	if err != nil {
		return Outcome{}, err
	}
	rep.Log("info", fmt.Sprintf("point %s restored: %d disk(s), %d bytes written", res.Point.ID.Short(), len(res.Targets), res.Stats.WrittenBytes))
	result, _ := json.Marshal(res.Report())
	return Outcome{Result: result}, nil
}

func (r *Jobs) forget(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Forget
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("forget job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	res, err := job.RunForget(ctx, v, spec, job.Env{Seen: r.Seen, Warn: func(s string) { rep.Log("warn", s) }})
	if err != nil {
		return Outcome{}, err
	}
	how := "deleted"
	if res.SoftDelete > 0 {
		how = "soft-deleted: restorable with 'lifeboat undelete' for " + policy.FormatDuration(res.SoftDelete)
	}
	rep.Log("info", fmt.Sprintf("retention %s: %d point(s) of %s forgotten (%s)", spec.Keep, len(res.Removed), spec.Machine, how))
	result, _ := json.Marshal(map[string]any{"removed": res.Removed, "kept": len(res.Kept), "soft_delete_seconds": int64(res.SoftDelete / time.Second)})
	return Outcome{Result: result, Forgotten: res.Removed}, nil
}

func (r *Jobs) prune(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Prune
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("prune job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	pr, err := maintenance.Prune(ctx, v, maintenance.PruneOptions{})
	if err != nil {
		return Outcome{}, err
	}
	result, _ := json.Marshal(pr)
	rep.Log("info", "prune done")
	return Outcome{Result: result}, nil
}

func (r *Jobs) copy(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Copy
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("copy job %s: spec: %w", j.ID, err)
	}
	from, err := r.vault(ctx, spec.From)
	if err != nil {
		return Outcome{}, err
	}
	to, err := r.vault(ctx, spec.To)
	if err != nil {
		return Outcome{}, err
	}
	st, err := job.RunCopy(ctx, from, to, spec, job.Env{Seen: r.Seen, Warn: func(s string) { rep.Log("warn", s) },
		CopyProgress: func(p vaultcopy.Progress) { rep.Progress(Progress{DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes}) }})
	if err != nil {
		return Outcome{}, err
	}
	rep.Log("info", fmt.Sprintf("copied %d point(s) of %s to %s", st.PointsCopied, spec.Machine, spec.To))
	result, _ := json.Marshal(st)
	return Outcome{Result: result}, nil
}

// verify fails the job when the vault has problems, naming the first.
func (r *Jobs) verify(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Verify
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("verify job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	vr, err := job.RunVerify(ctx, v, spec, job.Env{VerifyProgress: func(done, total int64) {
		rep.Progress(Progress{DoneBytes: done, TotalBytes: total})
	}})
	if vr == nil {
		return Outcome{}, err
	}
	for _, w := range vr.Warnings {
		rep.Log("warn", w)
	}
	for _, p := range vr.Problems {
		raw, _ := json.Marshal(p)
		rep.Log("error", string(raw))
	}
	result, _ := json.Marshal(vr)
	if err != nil {
		first, _ := json.Marshal(vr.Problems[0])
		return Outcome{Result: result}, fmt.Errorf("%w in %s; the first: %s", err, spec.Vault, first)
	}
	rep.Log("info", fmt.Sprintf("verified %d points, %d packs, %d chunks: no problems", vr.Points, vr.Packs, vr.Chunks))
	return Outcome{Result: result}, nil
}

func (r *Jobs) drill(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Drill
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("drill job %s: spec: %w", j.ID, err)
	}
	v, err := r.vault(ctx, spec.Vault)
	if err != nil {
		return Outcome{}, err
	}
	rep.Log("info", fmt.Sprintf("drilling %s point %s from %s", spec.Machine, spec.Point, spec.Vault))
	res, err := job.RunDrill(ctx, v, spec, job.Env{Warn: func(s string) { rep.Log("warn", s) }})
	if res == nil {
		return Outcome{}, err
	}
	result, _ := json.Marshal(res)
	if err == nil {
		rep.Log("info", fmt.Sprintf("point %s proven: the guest answered after %d ms", res.Point[:12], res.RTOMS))
	}
	return Outcome{Result: result}, err
}

// discover lists the running QEMU machines of this host.
func (r *Jobs) discover(ctx context.Context, j catalog.Job, rep Reporter) (Outcome, error) {
	var spec job.Discover
	if err := json.Unmarshal(j.Spec, &spec); err != nil {
		return Outcome{}, fmt.Errorf("discover job %s: spec: %w", j.ID, err)
	}
	if err := spec.Validate(); err != nil {
		return Outcome{}, err
	}
	found, err := discover.Find(ctx, discover.Options{Under: spec.Under})
	if err != nil {
		return Outcome{}, err
	}
	if found == nil {
		found = []discover.Machine{}
	}
	rep.Log("info", fmt.Sprintf("%d QEMU machine(s) found", len(found)))
	result, _ := json.Marshal(map[string]any{"machines": found})
	return Outcome{Result: result}, nil
}
