#!/usr/bin/env bash
# Runs Baton's demo on this machine: installs redis-server and the pinned nats-server when
# missing, then `baton dev` starts both on free ports in a temp dir with a coordinator and the
# demo agents, answers the demo question, and serves until Ctrl-C. Extra arguments go to
# `baton dev` (e.g. --once, --question "…").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools_bin="$(./scripts/ensure-deps.sh)"
export PATH="$tools_bin:$PATH"
# The `demo` profile is release without LTO (Cargo.toml): quicker to build from scratch.
cargo build --profile demo --locked -p baton-cli -p baton-agents --bins
exec ./target/demo/baton dev "$@"
