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
