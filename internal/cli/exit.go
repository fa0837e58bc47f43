package cli

import (
	"context"
	"errors"
	"syscall"

	"lifeboat/internal/api"
	"lifeboat/internal/backup"
	"lifeboat/internal/blob"
	"lifeboat/internal/capture"
	"lifeboat/internal/chunk"
	"lifeboat/internal/container"
	"lifeboat/internal/crypto"
	"lifeboat/internal/job"
	"lifeboat/internal/libvirt"
	"lifeboat/internal/live"
	"lifeboat/internal/location"
	"lifeboat/internal/maintenance"
	"lifeboat/internal/recovery"
	"lifeboat/internal/replicate"
	"lifeboat/internal/restore"
	"lifeboat/internal/server"
	"lifeboat/internal/source"
	"lifeboat/internal/vault"
	"lifeboat/internal/vaultcopy"
	"lifeboat/internal/vaultserve"
)

// Exit codes, documented in `lifeboat --help` and docs/cli.md.
const (
	ExitOK          = 0
	ExitError       = 1  // any other failure
	ExitUsage       = 2  // bad command line or input
	ExitPassphrase  = 3  // wrong or missing passphrase
	ExitNoVault     = 4  // no vault at the location
	ExitCorrupt     = 5  // verify found problems, or data failed its checks
	ExitNewerFormat = 6  // vault written by a newer lifeboat
	ExitStorage     = 7  // storage unreachable or refusing
	ExitNotFound    = 8  // no such point, machine or disk
	ExitDisk        = 9  // a disk could not be read (backup) or written (restore)
	ExitConsistency = 10 // point written, less consistent than --require-consistency asked
	ExitInterrupted = 130
)

// usageError marks errors in what the user asked for.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// ExitCode maps an error to the process exit code: the one place that does.
func ExitCode(err error) int {
	var u usageError
	var refused *api.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &u), errors.Is(err, restore.ErrFormat), errors.Is(err, container.ErrUnconfirmed), errors.Is(err, recovery.ErrNoImage),
		errors.Is(err, job.ErrInvalid), errors.Is(err, capture.ErrInvalid), replicate.IsInvalid(err), errors.Is(err, vault.ErrWeakPassphrase),
		errors.Is(err, maintenance.ErrShortenNeedsForce), errors.Is(err, api.ErrSettings), errors.Is(err, server.ErrConfig), errors.Is(err, vaultserve.ErrConfig),
		errors.Is(err, location.ErrInvalid), errors.Is(err, vault.ErrVaultExists), errors.Is(err, vaultcopy.ErrKeysDiffer), errors.Is(err, vaultcopy.ErrSameVault):
		return ExitUsage
	case errors.As(err, &refused):
		return serverExit(refused.Status)
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.Is(err, vault.ErrKeyRefused):
		return ExitUsage
	case errors.Is(err, vault.ErrNoKey):
		return ExitNotFound
	case errors.Is(err, crypto.ErrWrongPassphrase), errors.Is(err, vault.ErrStale), errors.Is(err, crypto.ErrUnknownKey):
		return ExitPassphrase
	case errors.Is(err, vault.ErrNoVault):
		return ExitNoVault
	case errors.Is(err, vault.ErrNewerFormat):
		return ExitNewerFormat
	case errors.Is(err, backup.ErrDiskRead), errors.Is(err, restore.ErrDiskWrite):
		return ExitDisk // not the vault's storage: retrying will not help
	case errors.Is(err, source.ErrOpen):
		return ExitError
	case errors.Is(err, job.ErrProblemsFound), errors.Is(err, chunk.ErrCorrupt), errors.Is(err, vault.ErrConfigChanged),
		errors.Is(err, blob.ErrOutOfRange): // an object shorter than its index says: truncated
		return ExitCorrupt
	case errors.Is(err, recovery.ErrConsistencyNotMet):
		return ExitConsistency
	case errors.Is(err, replicate.ErrNotFound):
		return ExitNotFound
	case errors.Is(err, recovery.ErrNoPoint), errors.Is(err, restore.ErrSizeMismatch):
		return ExitNotFound
	case errors.Is(err, libvirt.ErrNoDomain):
		return ExitNotFound
	case errors.Is(err, live.ErrMachine), errors.Is(err, libvirt.ErrNoDaemon), errors.Is(err, libvirt.ErrJobRunning),
		errors.Is(err, libvirt.ErrUnsupported):
		return ExitError // not the vault's storage
	case errors.Is(err, blob.ErrNotExist):
		return ExitCorrupt // a stored object that should be there is not
	// A file system's refusal or EIO: disks' own errors are told apart
	// above (ErrDiskRead, ErrDiskWrite, ErrOpen), so it is a directory vault's.
	case errors.Is(err, blob.ErrPermanent), blob.IsUnreachable(err), blob.IsRefused(err), errors.Is(err, syscall.EIO):
		return ExitStorage
	}
	return ExitError
}

// serverExit maps a lifeboat server's refusal to the exit codes above.
func serverExit(status int) int {
	switch {
	case status == 400:
		return ExitUsage
	case status == 401, status == 403:
		return ExitPassphrase // credentials: a missing, wrong or too weak token
	case status == 404:
		return ExitNotFound
	case status >= 500:
		return ExitStorage
	}
	return ExitError
}
