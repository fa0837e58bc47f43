// Package hostile is the catalogue of attacks on, and faults of, a
// vault's storage that lifeboat is tested against (issue 10), each with
// the outcome it must have and the test that proves it. The rows that
// name Suite run in internal/cli's TestHostileStorage against a
// directory vault and a real S3 server; the others name the test of
// their own package that covers them. docs/security.md shows the table
// as Markdown renders it, checked by this package's tests.
package hostile

import (
	"fmt"
	"strings"
)

// Outcome is what lifeboat must do about an attack.
type Outcome string

// Outcomes.
const (
	// Detected: the operation that needs the object fails, or verify
	// reports, naming the object; nothing wrong is written or restored.
	Detected Outcome = "detected and named"
	// Ignored: the operation goes on unharmed (with a warning naming the
	// object where there is one to name).
	Ignored Outcome = "ignored safely"
	// Refused: lifeboat will not go on, with an error saying why, and
	// changes nothing.
	Refused Outcome = "refused"
)

// Suite names the table-driven suite that runs a row against both stores.
const Suite = "internal/cli TestHostileStorage"

// Attack is one row of the table.
type Attack struct {
	ID      string  // stable, for test names: "points-truncate", "issue-4"
	Issue   int     // the numbered defect of issue 10, 0 for the generic rows
	Target  string  // the kind of object, or what else is attacked
	Attack  string  // what the attacker or fault does
	Outcome Outcome //
	Detail  string  // what lifeboat does, in a line
	Test    string  // Suite, or "internal/pkg TestName" that covers the row
}

// Table is every attack and fault, numbered defects first.
var Table = []Attack{
	{"issue-1", 1, "index", "an index object of the source planted in its copy, to make `vault copy` skip data", Refused,
		"index objects and pack headers bind the vault ID (format version 2): the planted one does not open at the copy", "internal/vaultcopy TestPlantedIndexDoesNotHideData"},
	{"issue-2", 2, "points", "a point whose disk or machine name is `../../x` or holds control characters", Refused,
		"names read from a vault pass the input checks; restore writes nothing; nothing raw is printed", "internal/cli TestRestoreRefusesHostileNames"},
	{"issue-3", 3, "points, index", "a planted or damaged object (random bytes, a stray README, one over its size cap)", Ignored,
		"points, restore and backup skip it with a warning naming it; prune refuses and deletes nothing", "internal/cli TestPlantedObjects"},
	{"issue-4", 4, "markers", "a forged or emptied `copied/` marker, to hide a point from later copies", Ignored,
		"markers carry a keyed tag over copy ID and point ID: a bad one is named and its point copied again", "internal/vaultcopy TestForgedCopyMarkersIgnored"},
	{"issue-5", 5, "S3 server, any object", "a `Content-Length` of 2^62, a 20 GiB object, a file over its kind's cap", Refused,
		"every kind has a size cap checked before reading; ranged reads must return exactly the length asked", "internal/blob TestS3LyingContentLength"},
	{"issue-5-dir", 5, "directory store", "an object file larger than its kind's cap", Refused,
		"refused before reading, naming it", "internal/blob TestDirOversizedObject"},
	{"issue-6", 6, "restore target", "a symbolic link or existing file where restore writes the definition", Refused,
		"the definition is created like the images: exclusive, no-follow, 0600", "internal/cli TestRestoreDefinitionFile"},
	{"issue-7", 7, "hooks", "a hook that prints its environment into a failing backup's notes", Refused,
		"hooks get no passphrase or S3 secret, and their output is redacted before it is stored", "internal/cli TestHooksGetNoSecrets"},
	{"issue-8", 8, "sessions", "a session marker refreshed in the future, to defer every prune", Ignored,
		"a marker dated more than 5 minutes ahead counts as expired, and is named", "internal/maintenance TestPruneIgnoresFutureSession"},
	{"issue-9", 9, "keys", "a key slot planted with a huge Argon2 cost", Refused,
		"slots are tried cheapest first; one beyond the maxima is skipped unread and named", "internal/vault TestOpenRefusesCostlySlot"},
	{"issue-9-order", 9, "keys", "a costly slot listed before the real one", Ignored,
		"the real, cheaper slot opens without deriving the costly one", "internal/vault TestOpenTriesCheapSlotsFirst"},
	{"issue-9-manifest", 9, "manifests", "a manifest that decompresses to gigabytes", Refused,
		"a manifest decodes only up to the size its point's disk needs", "internal/restore TestManifestBoundByPointDisk"},
	{"issue-10", 10, "packs, index", "one damaged copy of a chunk stored twice", Ignored,
		"restore, copy and verify read the other location", "internal/restore TestDuplicateChunkBadCopy"},
	{"issue-11", 11, "points", "the newest points deleted (a rollback)", Detected,
		"each host records the newest point per machine and vault; points, backup, restore and copy name the vanished one", "internal/cli TestVanishedPointsWarned"},
	{"issue-12", 12, "whole vault", "a read-only vault (mount, full disk)", Ignored,
		"restore and the source of a copy warn that they go without a session marker, and work; backup fails as storage refusing (7)", "internal/cli TestReadOnlyVault"},
	{"issue-12-s3", 12, "S3 credentials", "read-only S3 credentials", Ignored,
		"as for a read-only mount", "internal/cli TestReadOnlyS3Credentials"},
	{"issue-13", 13, "S3 server", "the server frozen (SIGSTOP), never resumed, during a backup", Refused,
		"the backup fails within the retry budget, naming the endpoint (7), and leaves no point", "internal/cli TestStorageS3ServerFreezes"},
	{"issue-14", 14, "S3 server", "the server paused (SIGSTOP) for longer than a request timeout, then resumed, during a restore", Ignored,
		"timeouts are retried within the budget; a restore killed midway resumes from its partial image", "internal/cli TestRestoreS3PauseAndKill"},
	{"issue-14-pause", 14, "S3 server", "the server paused past the header timeout, then resumed, during a read", Ignored,
		"a timeout is retried (only the caller's own deadline is final): the read costs attempts, not the read", "internal/blob TestS3PausedServer"},
	{"issue-14-budget", 14, "S3 server", "a server that keeps failing", Refused,
		"no attempt starts after the retry budget, and the error says why it gave up", "internal/blob TestRetryBudget"},
	{"issue-15", 15, "source disk", "an unreadable source disk (EIO) or a too-small restore target", Refused,
		"exit 9 (a local disk), not 7 (storage): scripts do not retry a dead disk", "internal/cli TestLocalDiskErrorsExitCode"},
	{"issue-16", 16, "packs", "`packs/xx/.tmp-*` left by a Put killed mid-write", Ignored,
		"verify lists them; prune removes those older than the session expiry", "internal/maintenance TestPartialUploadsListedAndPruned"},
	{"issue-17", 17, "source disk", "a crash-consistent backup of a block device mounted read-write here", Detected,
		"backup warns and points at --consistency file", "internal/cli TestCrashBackupOfMountedDiskWarns"},

	{"config-truncate", 0, "config", "truncated", Detected, "every command fails naming `config` as corrupt (5)", Suite},
	{"config-delete", 0, "config", "deleted", Refused, "no vault there (4); nothing is created in its place", Suite},
	{"config-replay", 0, "config", "replayed: the config from before a rekey put back", Ignored,
		"the key slot's authenticated config wins; new data is still sealed with the new key and the config is written forward by the next write", Suite},
	{"keys-truncate", 0, "keys", "every key slot truncated", Detected, "no slot opens: the damaged slots are named (5)", Suite},
	{"keys-delete", 0, "keys", "every key slot deleted", Detected, "\"no key slots\" (5)", Suite},
	{"keys-swap", 0, "keys", "two key slots' contents exchanged", Ignored, "slot names are random, not hashes: each passphrase still opens its slot", Suite},
	{"keys-replay", 0, "keys", "replayed: the newer slots deleted and the slot from before a rekey put back", Refused,
		"the config's key generation makes that slot stale: it restores the old points, fails on new ones naming the generation, and may not write (3)", Suite},
	{"keys-rollback", 0, "keys, config", "rolled back: the config and key slot from before a rekey put back, every newer slot deleted", Refused,
		"on a host that used the newer key (its record in LIFEBOAT_STATE_DIR): a warning that the keys may have been rolled back; old points restore, nothing is written (3). A host that never saw the newer key cannot tell", Suite},
	{"points-truncate", 0, "points", "truncated", Detected, "listing warns naming it; its restore fails naming it (5); the other points restore", Suite},
	{"points-delete", 0, "points", "the newest deleted", Detected, "the host that saw it warns it is gone (issue 11); the others restore", Suite},
	{"points-swap", 0, "points", "two points' contents exchanged", Detected, "neither hashes to its name: both are named, skipped and refused (5)", Suite},
	{"points-replay", 0, "points", "replayed: a forgotten, pruned point put back", Detected,
		"it lists again, but its restore and verify fail naming the manifest prune removed (5); the other points restore", Suite},
	{"manifests-truncate", 0, "manifests", "truncated", Detected, "restore of its point and verify fail naming it (5); other points restore", Suite},
	{"manifests-delete", 0, "manifests", "deleted", Detected, "restore of its point and verify fail naming it (5); other points restore", Suite},
	{"manifests-replay", 0, "manifests", "replayed: manifests prune removed put back", Ignored, "nothing refers to them: restores and verify --read-data pass; the next prune removes them again", Suite},
	{"manifests-swap", 0, "manifests", "two manifests' contents exchanged", Detected, "neither hashes to its name: restore and verify name them (5)", Suite},
	{"index-truncate", 0, "index", "every index object truncated", Detected, "skipped with a warning naming each; restore finds its chunks in no index and fails (5); verify names them", Suite},
	{"index-delete", 0, "index", "every index object deleted", Detected, "restore and verify fail, naming chunks in no index (5); prune deletes none of the packs that still hold them", Suite},
	{"index-swap", 0, "index", "two index objects' contents exchanged", Detected, "neither hashes to its name: skipped with warnings; verify names both (5)", Suite},
	{"index-replay", 0, "index", "replayed: index objects prune replaced put back", Detected,
		"locations in packs that are gone are passed over for the live ones, so restores pass; verify names each pack the index names but the vault lacks (5)", Suite},
	{"packs-truncate", 0, "packs", "every pack truncated", Detected, "restore fails naming the pack (5), writing nothing wrong; verify --read-data names each", Suite},
	{"packs-delete", 0, "packs", "every pack deleted", Detected, "restore fails naming the pack (5); verify names each", Suite},
	{"packs-replay", 0, "packs", "replayed: packs prune removed put back", Ignored, "nothing refers to them: restores and verify --read-data pass; the next prune removes them again", Suite},
	{"packs-swap", 0, "packs", "two packs' contents exchanged", Detected, "neither hashes to its name: verify --read-data names both (5)", Suite},
	{"markers-delete", 0, "markers", "every `copied/` marker at a copy deleted", Ignored, "the next copy takes the points again, sending only what the copy lacks, and writes their markers anew", Suite},
	{"markers-truncate", 0, "markers", "every `copied/` marker at a copy truncated", Ignored, "a marker is its name (a keyed tag); its content is not trusted: status stays up to date", Suite},
	{"sessions-garbage", 0, "sessions", "a session marker of random bytes planted", Ignored, "it is neither live nor dead: prune, backup and restore go on", Suite},
	{"markers-swap", 0, "markers", "two `copied/` markers' contents exchanged", Ignored, "a marker is its name (a keyed tag); its content is not read", Suite},

	// Soft delete: tombstones (deleted/) and settings (settings/).
	{"deleted-truncate", 0, "tombstones", "a soft-deleted point's tombstone truncated", Ignored,
		"skipped with a warning naming it, and its point counts as not deleted (the safe direction): listed, kept by prune, restorable", Suite},
	{"deleted-delete", 0, "tombstones", "a tombstone deleted", Ignored,
		"its point is live again, as after `undelete`: listed and restorable, nothing lost (a rollback of the forget, as the threat model says)", Suite},
	{"deleted-swap", 0, "tombstones", "a tombstone moved under another point's name", Ignored,
		"a tombstone is bound to its point: the moved one is named and skipped, both points stay listed and restorable", Suite},
	{"deleted-replay", 0, "tombstones", "replayed: the tombstone of an undeleted point put back", Ignored,
		"the point is soft-deleted again from the store's date of the replay: `points --deleted` shows it, prune keeps its data, `undelete` brings it back", Suite},
	{"deleted-garbage", 0, "tombstones", "random bytes or a stray `readme` planted under `deleted/`", Ignored,
		"named in a warning and skipped; the point it names stays live; the real tombstones still count", Suite},
	{"deleted-foreign", 0, "tombstones", "a tombstone of the source planted in its copy (they share the data key)", Ignored,
		"tombstones bind the vault ID and the point: the planted one is named and skipped", "internal/vault TestTombstonesAreBound"},
	{"deleted-backdated", 0, "tombstones, settings", "a tombstone or setting sealed with a clock set back 30 days (by whoever has the passphrase)", Ignored,
		"it counts from the store's date of the object, so it cannot skip the window", "internal/vault TestBackdatedObjectsCountFromStorage"},
	{"settings-truncate", 0, "settings", "a settings object truncated (damaged, or replaced by whoever can overwrite)", Refused,
		"named; while a setting cannot be read the window is unknown: prune will not purge and forget will not delete (5); the soft-deleted points stay", Suite},
	{"settings-delete", 0, "settings", "every settings object deleted, to turn soft delete off", Refused,
		"tombstones are written only under a window: a vault with tombstones and no setting makes prune and forget refuse (5), naming settings/, until `vault set` sets the window again", Suite},
	{"settings-replay", 0, "settings", "replayed: an older, shorter setting stored again with a new store date, to make it the newest", Ignored,
		"settings are ordered by the time sealed in them: the replayed one keeps its place and the newest (longer) window stays in force", Suite},
	{"settings-garbage", 0, "settings", "random bytes planted under `settings/`", Refused,
		"named; prune will not purge soft-deleted points until it is moved away (5)", Suite},
	{"settings-shorten", 0, "settings", "a shorter window set with the passphrase (an intruder on a host)", Refused,
		"refused without --force; forced, it takes effect only once the window it replaces has passed", "internal/cli TestSoftDelete"},

	// Append-only writers and object lock.
	{"append-only-delete", 0, "any object, with append-only access", "a point deleted by a host holding only create access (`vault serve --append-only` for a directory vault; S3 credentials without s3:DeleteObject, on MinIO)", Refused,
		"the storage refuses the delete; forget and prune refuse before changing anything, naming the credentials they need (7); backup and restore work; nothing stored before is gone", Suite},
	{"append-only-serve", 0, "any object, through `vault serve --append-only`", "a delete, or an overwrite with other bytes, by a host holding the endpoint's token", Refused,
		"403 and 409: the object stays as it was; forget and prune through the endpoint refuse before changing anything, naming the credentials they need", "internal/cli TestVaultServeAppendOnly"},
	{"append-only-serve-protocol", 0, "any object, through `vault serve --append-only`", "DELETE and PUT with other bytes sent straight to the endpoint", Refused,
		"refused, the object unchanged; the same bytes again are accepted (200)", "internal/vaultserve TestAppendOnly"},
	{"append-only-s3", 0, "any object, S3 append-only credentials", "a delete with credentials that have no s3:DeleteObject (a real MinIO IAM policy)", Refused,
		"storage refuses (7); forget and prune refuse before changing anything, naming s3:DeleteObject", "internal/cli TestAppendOnlyS3Credentials"},
	{"append-only-s3-create", 0, "any object, S3 append-only credentials", "an overwrite of an existing object through lifeboat's create-only puts", Refused,
		"the put is refused and the object keeps its bytes", "internal/blob TestS3CreateOnly"},
	{"lock-delete", 0, "locked objects (S3 Object Lock)", "a locked point deleted, with every version, by the bucket's root credentials", Refused,
		"S3 refuses (compliance mode, on MinIO) until the retention date; forget leaves the locked point, which restores; a directory vault cannot be locked, and `vault init --lock` says so (7)", Suite},
	{"lock-retention", 0, "locked objects (S3 Object Lock)", "retention drops points while they are locked", Refused,
		"forget and prune plan around what is locked and report until when; locks are extended while points are kept", "internal/cli TestObjectLockS3"},
	{"lock-governance", 0, "locked objects (S3 Object Lock)", "a locked object deleted in compliance and governance mode", Refused,
		"DeleteVersions fails with ErrLocked; an unlocked object's versions go", "internal/blob TestS3ObjectLock"},

	// Drill results and catalog snapshots.
	{"drills-truncate", 0, "drill results", "a drill result truncated", Ignored,
		"skipped with a warning naming it: its point shows as not drilled rather than as proven", Suite},
	{"drills-swap", 0, "drill results", "two drill results' contents exchanged", Ignored,
		"neither hashes to its name: both are named and skipped, no point shows a drill it did not have", Suite},
	{"drills-delete", 0, "drill results", "a point's drill result deleted", Ignored,
		"the point shows as never drilled (\"-\"): a missing result never reads as proven", Suite},
	{"drills-garbage", 0, "drill results", "random bytes planted under `drills/`", Ignored,
		"named in a warning and skipped; `points` goes on", Suite},
	{"catalog-replay", 0, "catalog snapshots", "replayed: an old catalog snapshot put back", Ignored,
		"the newest by the time sealed in it wins: `server --recover-from` reads the newest catalog", Suite},
	{"catalog-delete", 0, "catalog snapshots", "every catalog snapshot deleted", Detected,
		"`server --recover-from` finds no snapshot and says so; nothing is rebuilt from a guess", Suite},
	{"catalog-swap", 0, "catalog snapshots", "two catalog snapshots' contents exchanged", Detected,
		"neither hashes to its name: both are named and skipped", Suite},
	{"catalog-truncate", 0, "catalog snapshots", "the newest catalog snapshot truncated", Detected,
		"named in a warning and skipped: the newest readable one is used", Suite},
	{"catalog-foreign", 0, "catalog snapshots", "a snapshot of another vault sharing the data key, or a stray object, planted", Ignored,
		"snapshots bind the vault ID: the planted one does not open and is named", "internal/vault TestCatalogSnapshots"},

	// Wire formats and files read by lifeboat besides the vault's objects.
	{"replica-batch-torn", 0, "replication batches", "a batch cut short, or with a flipped byte, on the wire or in the target's journal", Refused,
		"refused as torn by its checksum; the last acknowledged cut stays", "internal/replica TestBatchRoundTripAndTorn"},
	{"replica-journal-damaged", 0, "replication journal", "an acknowledged batch damaged on the target's disk", Detected,
		"the failover fails naming the batch instead of serving wrong data", "internal/replica TestDamagedBatchRefused"},
	{"replica-seed", 0, "replication specs", "a spec naming a seed image outside the target's seed directory", Refused,
		"seeds are read only from the seed directory and must have the disk's size", "internal/replica TestSeedConfined"},
	{"replica-definition", 0, "replication specs", "a definition whose NIC MAC carries QEMU options (`...,romfile=/etc/shadow`)", Refused,
		"every value from a definition is escaped in QEMU's option syntax; FuzzParse checks no argument gains a key", "internal/boot TestDefinitionValuesEscaped"},
	{"replica-state", 0, "replication target's state files", "a machine's spec.json altered on the target's disk (a disk named `../../x`, another machine's spec)", Refused,
		"the state is held to what registering accepted: the store refuses to open, naming the file, as for a spec.json that does not parse", "internal/replica TestMachineStateRefused"},
	{"remote-listing", 0, "`vault serve` endpoint", "a listing cut short (the server or a proxy dies mid-answer)", Detected,
		"the listing has a final line: one without it is an error, never a shorter vault", "internal/vaultserve TestRemoteListCutShort"},
	{"secrets-file", 0, "server credentials file", "a credentials file damaged, or holding a setting lifeboat would not keep", Refused,
		"the file is refused whole, naming it, rather than read in part", "internal/secrets TestFile"},
}

// Rows returns the rows whose Test is test.
func Rows(test string) []Attack {
	var out []Attack
	for _, a := range Table {
		if a.Test == test {
			out = append(out, a)
		}
	}
	return out
}

// Markdown renders the table for docs/security.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| # | target | attack or fault | outcome | what lifeboat does | proved by |\n|---|---|---|---|---|---|\n")
	for _, a := range Table {
		n := ""
		if a.Issue > 0 {
			n = fmt.Sprint(a.Issue)
		}
		test := a.Test
		if test == Suite {
			test = "suite (dir, S3)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** | %s | `%s` |\n", n, a.Target, a.Attack, a.Outcome, a.Detail, test)
	}
	return b.String()
}
