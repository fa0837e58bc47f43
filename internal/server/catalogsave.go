package server

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"lifeboat/internal/agent"
	"lifeboat/internal/catalog"
	"lifeboat/internal/clock"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// The catalog is saved into the server's default vault (docs/format.md,
// "Control-plane catalog snapshots") whenever what it keeps changes, and
// at least every SnapshotEvery, so that `lifeboat server --recover-from`
// can rebuild a lost server from the vault alone.

// SnapshotEvery is the longest time between two snapshots of an
// unchanged catalog; SnapshotsKept how many stay in the vault.
const (
	SnapshotEvery = 24 * time.Hour
	SnapshotsKept = 3
)

// VaultOpener opens the vault at a URL, unlocked.
type VaultOpener func(ctx context.Context, url string) (*vault.Vault, error)

// catalogSaver writes a snapshot when the catalog's snapshot document
// changed since the last one written (or found in the vault).
type catalogSaver struct {
	cat     *catalog.Catalog
	open    VaultOpener
	clock   clock.Clock
	log     *slog.Logger
	builtin string

	v         *vault.Vault
	url       string
	last      [32]byte
	lastSaved time.Time
}

// save writes a snapshot if the catalog changed or the last one is old.
// It reports whether it wrote one.
func (s *catalogSaver) save(ctx context.Context) (bool, error) {
	vs, err := s.cat.Vaults(ctx)
	if err != nil {
		return false, err
	}
	url := VaultURL(vs, DefaultVault)
	if url == "" {
		return false, nil // no default vault: nowhere to save
	}
	if s.v == nil || s.url != url {
		v, err := s.open(ctx, url)
		if err != nil {
			return false, fmt.Errorf("opening vault %s to save the catalog: %w", url, err)
		}
		s.v, s.url = v, url
		if latest, err := v.LatestCatalog(ctx); err == nil {
			s.last, s.lastSaved = sha256.Sum256(latest.Doc), latest.Created
		} else if !errors.Is(err, vault.ErrNoCatalog) {
			return false, err
		}
	}
	snap, err := s.cat.Snapshot(ctx)
	if err != nil {
		return false, err
	}
	snap.BuiltinAgent = s.builtin
	doc, err := fitSnapshot(snap)
	if err != nil {
		return false, err
	}
	now := s.clock.Now()
	sum := sha256.Sum256(doc)
	if sum == s.last && now.Sub(s.lastSaved) < SnapshotEvery {
		return false, nil
	}
	id, err := s.v.SaveCatalog(ctx, doc)
	if err != nil {
		return false, fmt.Errorf("saving the catalog into vault %s: %w", url, err)
	}
	s.last, s.lastSaved = sum, now
	s.log.Info("catalog saved into the vault", "vault", url, "snapshot", id.Short(), "machines", len(snap.Machines))
	if err := s.v.TrimCatalogs(ctx, SnapshotsKept); err != nil {
		s.log.Warn("old catalog snapshots not deleted", "vault", url, "err", err)
	}
	return true, nil
}

// fitSnapshot encodes snap within catalog.MaxSnapshot: when it is larger,
// the history gives way first — the jobs' logs, then the jobs and
// alerts — so that what the operators said is always saved.
func fitSnapshot(snap catalog.Snapshot) ([]byte, error) {
	doc, err := json.Marshal(snap)
	if err != nil || len(doc) <= catalog.MaxSnapshot {
		return doc, err
	}
	jobs := make([]catalog.SnapJob, len(snap.Jobs))
	for i, j := range snap.Jobs {
		jobs[i] = catalog.SnapJob{Job: j.Job}
	}
	snap.Jobs = jobs
	if doc, err = json.Marshal(snap); err != nil || len(doc) <= catalog.MaxSnapshot {
		return doc, err
	}
	snap.Jobs, snap.Alerts = nil, nil
	return json.Marshal(snap)
}

// run saves at every tick until ctx ends.
func (s *catalogSaver) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.save(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("saving the catalog into the vault failed; retrying at the next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// VaultURL returns the URL of the vault named name, or "".
func VaultURL(vs []catalog.Vault, name string) string {
	for _, v := range vs {
		if v.Name == name {
			return v.URL
		}
	}
	return ""
}

// RecoverReport says what a recovery rebuilt.
type RecoverReport struct {
	Snapshot time.Time `json:"snapshot"`
	Host     string    `json:"host"`
	Machines int       `json:"machines"`
	Policies int       `json:"policies"`
	Tiers    int       `json:"tiers"`
	Tokens   int       `json:"tokens"`
	Jobs     int       `json:"jobs"`
	Alerts   int       `json:"alerts"`
	Points   int       `json:"points"`
}

// recoverCatalog rebuilds an empty catalog from the newest snapshot in
// the vault at url, which becomes the default vault, and indexes the
// points actually in the vaults it names (those the opener can open).
func recoverCatalog(ctx context.Context, cat *catalog.Catalog, cfg Config, url string) (RecoverReport, error) {
	var rep RecoverReport
	if cfg.OpenVault == nil {
		return rep, fmt.Errorf("%w: --recover-from needs a way to open vaults", ErrConfig)
	}
	v, err := cfg.OpenVault(ctx, url)
	if err != nil {
		return rep, fmt.Errorf("recovering from %s: %w", url, err)
	}
	latest, err := v.LatestCatalog(ctx)
	if err != nil {
		return rep, fmt.Errorf("recovering from %s: %w", url, err)
	}
	snap, err := catalog.ParseSnapshot(latest.Doc)
	if err != nil {
		return rep, fmt.Errorf("recovering from %s: snapshot %s: %w", url, latest.ID.Short(), err)
	}
	// The vault recovered from is the default vault now, wherever it was.
	found := false
	for i := range snap.Vaults {
		if snap.Vaults[i].Name == DefaultVault {
			snap.Vaults[i].URL, found = url, true
		}
	}
	if !found {
		snap.Vaults = append(snap.Vaults, catalog.Vault{Name: DefaultVault, URL: url, Created: cfg.Clock.Now()})
	}
	skip := map[string]bool{}
	if snap.BuiltinAgent != "" {
		skip[snap.BuiltinAgent] = true
	}
	now := cfg.Clock.Now()
	if err := cat.RestoreSnapshot(ctx, snap, skip, now); err != nil {
		return rep, err
	}
	rep = RecoverReport{Snapshot: latest.Created, Host: latest.Host, Machines: len(snap.Machines), Policies: len(snap.Policies),
		Tiers: len(snap.Tiers), Tokens: len(snap.Tokens) - len(skip), Jobs: len(snap.Jobs), Alerts: len(snap.Alerts)}

	// The points: those in each vault the snapshot names.
	for _, sv := range snap.Vaults {
		pv := v
		if sv.URL != url {
			if pv, err = cfg.OpenVault(ctx, sv.URL); err != nil {
				cfg.Log.Warn("recovery: the points of a vault are not indexed: it does not open here", "vault", sv.Name, "url", sv.URL, "err", err)
				continue
			}
		}
		points, err := recovery.List(ctx, pv)
		if err != nil {
			return rep, fmt.Errorf("recovery: listing the points of vault %s: %w", sv.Name, err)
		}
		var cps []catalog.Point
		for _, p := range points {
			cps = append(cps, agent.PointOf(sv.Name, p))
		}
		if err := cat.RecordPoints(ctx, cps); err != nil {
			return rep, err
		}
		rep.Points += len(cps)
	}
	return rep, nil
}

// keepPassphrase writes the default vault's passphrase into the data
// directory after a recovery, when the vault is DATA/vault and the file
// is gone with the rest: the built-in agent unlocks it from there.
func keepPassphrase(dataDir, url string, pass []byte) error {
	if filepath.Clean(url) != filepath.Join(dataDir, DefaultVaultDir) || len(pass) == 0 {
		return nil
	}
	path := filepath.Join(dataDir, DefaultPassphraseFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := fmt.Fprintln(f, string(pass)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
