package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"lifeboat/internal/blob"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/vault"
)

// lockFlags are vault init's --lock and --lock-mode.
type lockFlags struct{ period, mode string }

func (f *lockFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.period, "lock", "", `S3 Object Lock: store every object a point needs under a retention this long (30d, 12h), `+
		`extended by each backup and forget while points need them; the bucket must have Object Lock enabled (docs/security.md)`)
	cmd.Flags().StringVar(&f.mode, "lock-mode", blob.LockCompliance, `with --lock: "compliance" (nobody can delete a locked object, not even the bucket's owner) `+
		`or "governance" (credentials with s3:BypassGovernanceRetention can)`)
}

// lock returns the lock the flags ask for, nil without --lock.
func (f *lockFlags) lock(cmd *cobra.Command) (*vault.Lock, error) {
	if f.period == "" {
		if cmd.Flags().Changed("lock-mode") {
			return nil, usageError{fmt.Errorf("--lock-mode needs --lock")}
		}
		return nil, nil
	}
	d, err := policy.ParseDuration(f.period)
	if err != nil || d < 1e9 {
		return nil, usageError{fmt.Errorf("--lock %q: want a period of at least 1s, such as 30d or 12h", f.period)}
	}
	if f.mode != blob.LockCompliance && f.mode != blob.LockGovernance {
		return nil, usageError{fmt.Errorf("--lock-mode %q: want compliance or governance", f.mode)}
	}
	return &vault.Lock{Mode: f.mode, Seconds: int64(d.Seconds())}, nil
}

// printLocked says which points forget left for their lock.
func (a *app) printLocked(res *maintenance.ForgetResult) {
	for _, l := range res.Locked {
		a.printf("point %s is locked until %s: it stays, and a forget after that removes it\n", l.ID[:12], l.Until.Local().Format("2006-01-02 15:04:05"))
	}
}

// printLock says what vault init locked.
func (a *app) printLock(cfg vault.Config) {
	if cfg.Lock != nil {
		a.printf("objects are locked (%s mode) for %s after they are stored or last needed\n",
			cfg.Lock.Mode, policy.FormatDuration(cfg.Lock.Period()))
	}
}
