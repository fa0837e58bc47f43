#!/usr/bin/env bash
# Installs what lifeboat's demo and tests need on a Debian machine: Go
# modules, e2fsprogs (mkfs.ext4 for real disk images), QEMU (qemu-img,
# qemu-io, qemu-nbd, qemu-storage-daemon, qemu-system-x86_64), nbdkit and
# libnbd's tools (NBD peers), busybox-static and qemu-guest-agent (test VMs,
# see scripts/vm-assets.sh), fuse3, iproute2 (network namespaces for the
# vault-copy partition test), libvirt (libvirtd and virsh, for libvirt
# domains), PostgreSQL (the catalog's second engine), Chromium (the
# dashboard's browser test),
# versitygw and MinIO (two real S3 servers for the
# S3 and vault-copy tests). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
# cgo: libzstd (vendored C, internal/chunk) and the race detector.
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# QEMU and NBD peers (internal/qmp, internal/nbd, internal/live) and test VMs
# (internal/vmtest): QEMU under TCG, a static busybox and the real guest
# agent for the initramfs.
command -v qemu-img >/dev/null 2>&1 || need_apt+=(qemu-utils)
command -v qemu-storage-daemon >/dev/null 2>&1 || need_apt+=(qemu-system-common)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
command -v nbdinfo >/dev/null 2>&1 || need_apt+=(libnbd-bin)
command -v nbdkit >/dev/null 2>&1 || need_apt+=(nbdkit)
# fio (its nbd engine, through libnbd): an export's latency (bench/export.sh) and
# the replication write-load benchmark (bench/replication-mirror.sh).
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
[ -x /usr/sbin/qemu-ga ] || need_apt+=(qemu-guest-agent)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# libvirt domains (internal/libvirt, internal/live): the tests start a private
# libvirtd themselves (internal/libvirt/libvirttest); virsh is for people.
command -v libvirtd >/dev/null 2>&1 || need_apt+=(libvirt-daemon-system)
command -v virsh >/dev/null 2>&1 || need_apt+=(libvirt-clients)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
# The control plane's catalog runs on PostgreSQL too (internal/catalog/pgtest
# starts a throwaway server from Debian's binaries).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# The dashboard's end-to-end test drives a real headless Chromium (chromedp).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
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
# MinIO publishes no semver tags: this pseudo-version is its last commit on
# the module proxy (RELEASE.2026-02 era); it builds with Go 1.26.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
if ! command -v minio >/dev/null 2>&1 && [ ! -x "$GOBIN_DIR/minio" ]; then
  echo "installing minio $MINIO_VERSION (second S3 server for the vault copy tests; takes minutes)..." >&2
  GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION"
fi
