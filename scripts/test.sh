#!/usr/bin/env bash
# Baton's whole test suite, from a fresh Debian machine with only the Rust toolchain:
# installs redis-server and the pinned nats-server when missing, checks formatting, lints,
# the crate-boundary invariants, then runs every test against real servers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tools_bin="$(./scripts/ensure-deps.sh)"
export PATH="$tools_bin:$PATH"
echo "using $(nats-server --version) and $(redis-server --version | cut -d' ' -f1-3)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Boundaries (ARCHITECTURE.md): the protocol and core crates do no I/O, workers never touch
# Redis, and only the public NATS contract crosses the client crate.
for pair in "baton-protocol tokio" "baton-protocol async-nats" "baton-protocol redis" \
            "baton-core tokio" "baton-core async-nats" "baton-core redis" \
            "baton-worker redis" "baton-agents redis" \
            "baton-metrics redis" "baton-metrics async-nats" \
            "baton-client baton-coordinator" "baton-client baton-core" \
            "baton-client redis" "baton-client baton-harness"; do
  set -- $pair
  if cargo tree --locked -p "$1" -e normal -i "$2" >/dev/null 2>&1; then
    echo "boundary violated: $1 depends on $2" >&2
    exit 1
  fi
done

# The coordinator image's binary (baton-cli without its default feature `dev`) carries no
# bench, chaos runner, test harness, demo agents or SQLite (issue 14).
coordinator_only="$(cargo tree --locked -p baton-cli --no-default-features -e normal --prefix none)"
for crate in rusqlite baton-agents baton-bench baton-chaos baton-harness; do
  if grep -q "^$crate v" <<<"$coordinator_only"; then
    echo "boundary violated: baton-cli --no-default-features depends on $crate" >&2
    exit 1
  fi
done

# Multi-process tests start the built binaries.
cargo build --workspace --bins --locked
cargo test --workspace --locked
./scripts/fuzz.sh 10   # 10 s per fuzz target, on stable (docs/testing.md)
