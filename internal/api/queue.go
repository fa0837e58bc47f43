package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"lifeboat/internal/catalog"
	"lifeboat/internal/job"
)

// BackupAttempts is how many times a scheduled or manual backup is tried
// before its job fails (with Backoff between attempts).
const BackupAttempts = 3

// EnqueueBackup queues a backup of machine m under its policy now: for
// backup-now, which reads the policy and its vault first.
func EnqueueBackup(ctx context.Context, cat *catalog.Catalog, m catalog.Machine, why string, now time.Time) (string, error) {
	if m.Policy == "" {
		return "", fmt.Errorf("%w: machine %q %v", catalog.ErrInvalid, m.Name, errNoPolicy)
	}
	p, err := cat.Policy(ctx, m.Policy)
	if err != nil {
		return "", err
	}
	vaults, err := cat.Vaults(ctx)
	if err != nil {
		return "", err
	}
	j, err := BackupJob(m, p, VaultURLs(vaults), why)
	if err != nil {
		return "", err
	}
	return cat.Enqueue(ctx, j, now)
}

// VaultURLs maps vault names to URLs.
func VaultURLs(vs []catalog.Vault) map[string]string {
	urls := map[string]string{}
	for _, v := range vs {
		urls[v.Name] = v.URL
	}
	return urls
}

// BackupJob is the job that backs up machine m under policy p, whose
// vault's URL is in urls: the one place a machine, its policy and the
// policy's vault become a job spec, for the scheduler and backup-now
// alike. why is recorded in the point's tags ("scheduled", "manual").
func BackupJob(m catalog.Machine, p catalog.Policy, urls map[string]string, why string) (catalog.Job, error) {
	url := urls[p.Vault]
	if url == "" {
		return catalog.Job{}, fmt.Errorf("%w: policy %q names vault %q, which the server does not know", catalog.ErrInvalid, p.Name, p.Vault)
	}
	var src job.Source
	if err := json.Unmarshal(m.Spec, &src); err != nil {
		return catalog.Job{}, fmt.Errorf("machine %q: stored source damaged: %w", m.Name, err)
	}
	spec := job.Backup{Machine: m.Name, Source: src, Vault: url, Consistency: p.Consistency, Tags: []string{why, "policy:" + p.Name}}
	if err := spec.Validate(); err != nil {
		return catalog.Job{}, fmt.Errorf("%w: machine %q under policy %q: %v", catalog.ErrInvalid, m.Name, p.Name, err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return catalog.Job{}, err
	}
	return catalog.Job{Kind: "backup", Machine: m.Name, Agent: m.Agent, Vault: p.Vault, Spec: raw, MaxAttempts: BackupAttempts}, nil
}

// NewSecret makes a token's secret: 32 random bytes, URL-safe base64.
func NewSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "lbt_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
