package job

import (
	"context"
	"errors"
	"fmt"

	"lifeboat/internal/backup"
	"lifeboat/internal/capture"
	"lifeboat/internal/lastseen"
	"lifeboat/internal/live"
	"lifeboat/internal/location"
	"lifeboat/internal/quiesce"
	"lifeboat/internal/recovery"
	"lifeboat/internal/restore"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
)

// Env is what a run needs from the process that hosts it: the CLI, an
// agent or the server's built-in agent.
type Env struct {
	// Executable is lifeboat's own binary, run as the thaw watchdog.
	Executable string
	// Warn receives notices that do not stop the run.
	Warn func(string)
	// Progress receives a backup's progress, RestoreProgress a restore's.
	Progress        func(backup.Progress)
	RestoreProgress func(restore.Progress)
	CopyProgress    func(vaultcopy.Progress)
	// VerifyProgress receives the pack bytes a verify read and their total.
	VerifyProgress func(done, total int64)
	// Seen is this host's record of the newest points seen per vault
	// (rollback detection); nil records nothing.
	Seen *lastseen.Book
}

func (e Env) warn(s string) {
	if e.Warn != nil {
		e.Warn(s)
	}
}

// RunBackup backs up the machine b describes into v, which must be the
// vault b.Vault names, opened. It returns the point, and with
// RequireConsistency an error wrapping recovery.ErrConsistencyNotMet when
// the point (which stands) is less consistent than asked.
func RunBackup(ctx context.Context, v *vault.Vault, b Backup, env Env) (*recovery.Point, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	cons, err := recovery.ParseConsistency(b.Consistency)
	if err != nil {
		return nil, invalid("consistency", "%v", err)
	}
	var def *recovery.Definition
	if len(b.Definition) > 0 {
		if def, err = recovery.ParseDefinition(b.Definition); err != nil {
			return nil, invalid("definition", "%v", err)
		}
	}
	if b.GuestAgent != "" && cons == recovery.Crash {
		env.warn("the guest agent is not used with crash consistency: the guest is not frozen (ask for file or app consistency)")
	}
	var p *recovery.Point
	switch {
	case b.Libvirt != "":
		p, err = backupLibvirt(ctx, v, b, cons, env)
	case b.QMP != "":
		p, err = backupLive(ctx, v, b, cons, env)
	default:
		p, err = backupLocal(ctx, v, b, cons, def, env)
	}
	if err != nil {
		return nil, fmt.Errorf("backup of %s: %w", b.Machine, err)
	}
	if b.RequireConsistency {
		return p, p.RequireConsistency(cons)
	}
	return p, nil
}

func backupLive(ctx context.Context, v *vault.Vault, b Backup, cons recovery.Consistency, env Env) (*recovery.Point, error) {
	var only []string
	for _, d := range b.Disks {
		only = append(only, d.Name)
	}
	hookEnv := []string{"LIFEBOAT_MACHINE=" + b.Machine, "LIFEBOAT_QMP=" + b.QMP}
	return live.Backup(ctx, v, live.Options{Machine: b.Machine, QMP: b.QMP, Consistency: cons, GuestAgent: b.GuestAgent,
		Executable: env.Executable, FreezeTimeout: b.freezeTimeout(), Disks: only, Dir: b.FleeceDir, Definition: b.Definition,
		NBDServer: b.NBDServer, Tags: b.Tags, Audit: b.Audit, Progress: env.Progress, Warn: env.Warn,
		PreHook:  quiesce.Hook{Command: b.PreHook, Timeout: b.hookTimeout(), Env: hookEnv},
		PostHook: quiesce.Hook{Command: b.PostHook, Timeout: b.hookTimeout(), Env: hookEnv}})
}

func backupLibvirt(ctx context.Context, v *vault.Vault, b Backup, cons recovery.Consistency, env Env) (*recovery.Point, error) {
	var only []string
	for _, d := range b.Disks {
		only = append(only, d.Name)
	}
	return live.BackupLibvirt(ctx, v, live.LibvirtOptions{Machine: b.Machine, Domain: b.Libvirt, URI: b.Connect,
		Consistency: cons, FreezeTimeout: b.freezeTimeout(), Disks: only, Dir: b.FleeceDir,
		Tags: b.Tags, Audit: b.Audit, Progress: env.Progress, Warn: env.Warn, Executable: env.Executable})
}

func backupLocal(ctx context.Context, v *vault.Vault, b Backup, cons recovery.Consistency, def *recovery.Definition, env Env) (*recovery.Point, error) {
	o := capture.Options{Machine: b.Machine, Consistency: cons, Definition: def, Bitmap: b.Bitmap,
		PreHook: b.PreHook, PostHook: b.PostHook, HookTimeout: b.hookTimeout(), FreezeTimeout: b.freezeTimeout(),
		Executable: env.Executable, Warn: env.Warn}
	if location.IsDir(b.Vault) {
		o.VaultDir = b.Vault
	}
	for _, d := range b.Disks {
		o.Names = append(o.Names, d.Name)
		o.Paths = append(o.Paths, d.Path)
	}
	capt, err := capture.Local(ctx, o)
	if err != nil {
		return nil, err
	}
	defer capt.Close()
	if b.Bitmap != "" {
		if err := capt.NBDTracking(ctx, v, o); err != nil {
			return nil, err
		}
	}
	opts := backup.Options{Machine: b.Machine, Definition: b.Definition, Consistency: capt.Consistency, Tags: b.Tags,
		Warn: env.Warn, Disks: capt.Disks, Notes: capt.Notes, Audit: b.Audit, Precommit: capt.Precommit, Seen: env.Seen,
		Progress: env.Progress}
	bctx := capt.Ctx(ctx)
	p, err := backup.Run(bctx, v, opts)
	if err != nil && ctx.Err() == nil && context.Cause(bctx) != nil {
		err = context.Cause(bctx) // the freeze ran out, not the caller
	}
	if rerr := capt.Release(); rerr != nil {
		if err == nil {
			// The point is committed and consistent; the thaw or hook
			// after it failed. Say so loudly, but the point stands.
			env.warn(rerr.Error())
		} else {
			err = errors.Join(err, rerr)
		}
	}
	return p, err
}
