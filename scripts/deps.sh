#!/usr/bin/env bash
# Installs what lifeboat's demo and tests need on a Debian machine: Go
# modules, e2fsprogs (mkfs.ext4 for real disk images), QEMU's and libnbd's
# NBD tools and nbdkit (real NBD peers) and versitygw (a real S3 server for
# the S3 tests). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
# NBD peers for internal/nbd's tests: qemu-nbd/qemu-img/qemu-io,
# qemu-storage-daemon, nbdkit (memory plugin, error and blocksize-policy
# filters), nbdinfo/nbdcopy.
command -v qemu-nbd >/dev/null 2>&1 || need_apt+=(qemu-utils)
command -v qemu-storage-daemon >/dev/null 2>&1 || need_apt+=(qemu-system-common)
command -v nbdkit >/dev/null 2>&1 || need_apt+=(nbdkit)
command -v nbdinfo >/dev/null 2>&1 || need_apt+=(libnbd-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"

go mod download
GOBIN_DIR="$(go env GOPATH)/bin"
if ! command -v versitygw >/dev/null 2>&1 && [ ! -x "$GOBIN_DIR/versitygw" ]; then
  echo "installing versitygw v1.8.0 (S3 server for tests)..." >&2
  GOFLAGS=-mod=mod go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
