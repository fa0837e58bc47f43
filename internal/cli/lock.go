package cli

import (
	"github.com/spf13/cobra"

	"lifeboat/internal/blob"
	"lifeboat/internal/job"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/policy"
	"lifeboat/internal/vault"
)

// addLockFlags adds vault init's --lock and --lock-mode.
func addLockFlags(cmd *cobra.Command, spec *job.VaultInit) {
	cmd.Flags().StringVar(&spec.Lock, "lock", "", `S3 Object Lock: store every object a point needs under a retention this long (30d, 12h), `+
		`extended by each backup and forget while points need them; the bucket must have Object Lock enabled (docs/security.md)`)
	cmd.Flags().StringVar(&spec.LockMode, "lock-mode", blob.LockCompliance, `with --lock: "compliance" (nobody can delete a locked object, not even the bucket's owner) `+
		`or "governance" (credentials with s3:BypassGovernanceRetention can)`)
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
