package job

import (
	"context"
	"path/filepath"
	"time"

	"lifeboat/internal/mount"
	"lifeboat/internal/pointdisk"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

// Mount shows a point's disks as read-only files under Dir and mounts
// their ext4 and XFS file systems read-only (internal/mount).
type Mount struct {
	Machine string `json:"machine"`
	Point   string `json:"point"`
	Vault   string `json:"vault"`
	Dir     string `json:"dir"`
}

// Validate reports the first thing wrong with m.
func (m Mount) Validate() error {
	if err := pointRef(m.Machine, m.Point, m.Vault, "mount from"); err != nil {
		return err
	}
	if !filepath.IsAbs(m.Dir) {
		return invalid("dir", "directory %q is not absolute", m.Dir)
	}
	return nil
}

// RunMount mounts the point m names from v until ctx ends (SIGINT,
// SIGTERM) or the disks are unmounted from outside (lifeboat umount),
// then undoes everything. ready is called once it is all mounted.
func RunMount(ctx context.Context, v *vault.Vault, m Mount, env Env, ready func(*recovery.Point, *mount.FS)) error {
	if err := m.Validate(); err != nil {
		return err
	}
	p, _, err := recovery.Resolve(ctx, v, m.Machine, m.Point)
	if err != nil {
		return err
	}
	pt, err := pointdisk.Open(ctx, v, p, "", pointdisk.Options{Warn: env.Warn})
	if err != nil {
		return err
	}
	defer pt.Close(context.WithoutCancel(ctx))
	fs, err := mount.Mount(ctx, pt, m.Dir)
	if err != nil {
		return err
	}
	for _, s := range fs.Skipped {
		env.warn(s)
	}
	if ready != nil {
		ready(p, fs)
	}
	done := make(chan struct{})
	go func() { fs.Wait(); close(done) }()
	select {
	case <-ctx.Done():
	case <-done:
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return fs.Close(cctx)
}
