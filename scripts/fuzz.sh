#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each and fails on any crash (a panic,
# a broken invariant, a timeout or running out of memory). Works on the stable toolchain:
# with `--sanitizer none` cargo-fuzz passes rustc only stable flags (`-Cpasses=sancov-module`,
# `-Cllvm-args=...`); AddressSanitizer would need nightly's `-Zsanitizer`, and the targets are
# safe Rust. Installs the pinned cargo-fuzz into the project-local .tools/ when missing.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     # default: 20 s, every target
#   scripts/fuzz.sh 600 plan_yaml                          # a longer run of one target
#
# New inputs libFuzzer finds go to fuzz/target/corpus/<target> (not committed); the seeds
# in fuzz/corpus/<target> are read, never written. A crash leaves its input in
# fuzz/artifacts/<target>/ (replaying it: docs/testing.md).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
seconds="${1:-20}"
shift || true

log() { echo "fuzz: $*" >&2; }

export PATH="$tools/bin:$PATH"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools" --quiet
fi

cd "$root/fuzz"
# Release with debug assertions and overflow checks (cargo-fuzz's default); 16 codegen units
# build much faster on small machines for a slightly slower fuzzer.
build=(--sanitizer none --release --debug-assertions --codegen-units 16)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

started=$(date +%s)
# cargo-fuzz has no --locked; this fails the same way if Cargo.lock is out of date.
cargo metadata --locked --format-version 1 >/dev/null
cargo fuzz build "${build[@]}"
log "built ${#targets[@]} targets in $(($(date +%s) - started)) s"

for target in "${targets[@]}"; do
  work="$root/fuzz/target/corpus/$target"
  mkdir -p "$work" "$root/fuzz/artifacts/$target"
  output="$root/fuzz/target/$target.$$.log"   # per run: two runs may overlap
  if ! cargo fuzz run "${build[@]}" "$target" "$work" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$output" 2>&1; then
    tail -n 60 "$output" >&2
    log "$target FAILED; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$output" | tail -n 1)
  coverage=$(grep -a -o 'cov: [0-9]*' "$output" | tail -n 1 || true)
  log "$target: ${execs:-?} runs in $seconds s, $coverage, no crash"
  rm -f "$output"
done
log "all ${#targets[@]} targets passed in $(($(date +%s) - started)) s"
