#!/usr/bin/env bash
# The whole test suite: installs what it needs, then vet and the race-enabled
# tests. S3 tests run against a real versitygw and refuse to skip here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
export PATH="$(go env GOPATH)/bin:$PATH"
export LIFEBOAT_REQUIRE_S3=1 LIFEBOAT_REQUIRE_VM=1 LIFEBOAT_REQUIRE_PG=1 LIFEBOAT_REQUIRE_BROWSER=1
# Tests that need a real peer (QEMU, MinIO, loop devices, ...) fail instead
# of skipping when it is missing.
export CI=${CI:-true}
# The test VMs' kernel and initramfs (cached in /var/cache/lifeboat-vm).
./scripts/vm-assets.sh >/dev/null

unformatted=$(gofmt -l cmd internal e2e)
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
# bench/work holds copied trees of real files (some .go): name our packages.
pkgs=(./cmd/... ./internal/... ./e2e/...)
go vet "${pkgs[@]}"
# Builds without cgo use the pure-Go zstd for chunks too: vet and test them.
CGO_ENABLED=0 go vet ./internal/chunk
CGO_ENABLED=0 go test -count=1 ./internal/chunk
go test -race -timeout 30m "$@" "${pkgs[@]}"

# Every parser of vault objects (docs/format.md objects) and of other
# untrusted input — replication batches and specs, the vault serve protocol,
# NBD, definitions a replication target boots, the server's credentials
# file — fuzzed for a few seconds each (issue 10): no panic, allocation
# bounded by the input. -fuzz takes
# one target per run. A count of inputs rather than a duration: when a
# duration runs out while an input is being run, go test can report the
# deadline as a failure. LIFEBOAT_FUZZTIME=1m (or 1000000x) fuzzes longer.
fuzztime=${LIFEBOAT_FUZZTIME:-20000x}
for target in \
  "./internal/chunk FuzzPackHeader" "./internal/chunk FuzzBlob" "./internal/chunk FuzzIndexObject" \
  "./internal/image FuzzManifest" \
  "./internal/recovery FuzzPoint" "./internal/recovery FuzzDefinition" \
  "./internal/vault FuzzConfig" "./internal/vault FuzzSessionMarker" "./internal/vault FuzzSealedObject" \
  "./internal/vault FuzzSoftDeleteObjects" \
  "./internal/vault FuzzCatalogSnapshot" "./internal/catalog FuzzSnapshot" \
  "./internal/crypto FuzzKeySlot" "./internal/crypto FuzzRing" \
  "./internal/drill FuzzResult" \
  "./internal/replica FuzzBatch" "./internal/replica FuzzSpec" "./internal/replica FuzzMachineState" \
  "./internal/blob FuzzRemoteListing" "./internal/vaultserve FuzzParseRange" \
  "./internal/secrets FuzzCredentialsFile" "./internal/secrets FuzzEnvFile" \
  "./internal/boot FuzzParse" \
  "./internal/nbd FuzzClientHandshake" "./internal/nbd FuzzClientReplies" "./internal/nbd FuzzServerConn"; do
  read -r pkg fn <<<"$target"
  go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg"
done
