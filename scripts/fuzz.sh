#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets (or the ones named as arguments) for
# FUZZ_SECS seconds each (default 30; 0 only builds them), on the stable toolchain.
# Installs the pinned cargo-fuzz when `cargo fuzz --version` does not show it, checks that
# fuzz/Cargo.lock is up to date (--locked), builds all targets once, then fuzzes each.
#
# The targets are built with `--sanitizer none`, which needs no nightly features: the
# parsers they reach are safe Rust (both crates `#![deny(unsafe_code)]`), so AddressSanitizer
# would find nothing more, for a slower build and several times fewer executions per second.
# FUZZ_SANITIZER=address brings it back (with RUSTC_BOOTSTRAP=1: the sanitizers are -Z
# flags, which stable takes only so). Overflow checks and debug assertions are on either way
# (cargo-fuzz's default).
#
# The seed corpus fuzz/corpus/NAME is only read: libFuzzer writes the new inputs it finds to
# the first corpus directory, here fuzz/target/fuzz-corpus/NAME, which is kept between runs
# (git-ignored). On a crash, a failed assertion, a timeout (-timeout=10 s per input) or too
# much memory (-rss_limit_mb=2048), the script prints the end of libFuzzer's output and the
# crashing input (written under fuzz/artifacts/NAME/, git-ignored) and exits 1 once every
# target has run. Reproduce with `cargo fuzz run --sanitizer none NAME INPUT`.
#
#   scripts/fuzz.sh                        # every target, 30 s each
#   FUZZ_SECS=300 scripts/fuzz.sh config   # one target, 5 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
secs=${FUZZ_SECS:-30}
sanitizer=${FUZZ_SANITIZER:-none}
case $secs in
  '' | *[!0-9]*) echo "FUZZ_SECS must be a number of seconds, not '$secs'" >&2; exit 2 ;;
esac
[ "$sanitizer" = none ] || export RUSTC_BOOTSTRAP=1

all=()
for f in fuzz/fuzz_targets/*.rs; do
  all+=("$(basename "$f" .rs)")
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no fuzz target '$t' (have: ${all[*]})" >&2; exit 2; }
done

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# cargo-fuzz has no --locked of its own: fail here when fuzz/Cargo.lock would change.
(cd fuzz && cargo metadata --locked --format-version 1 >/dev/null)

fuzz=(--sanitizer "$sanitizer")
echo "==> building the fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${fuzz[@]}"
echo "built in $((SECONDS - start)) s"
[ "$secs" -gt 0 ] || exit 0

mkdir -p fuzz/target/fuzz-logs
failed=()
for t in "${targets[@]}"; do
  echo "==> fuzzing $t for $secs s"
  work="fuzz/target/fuzz-corpus/$t"
  log="fuzz/target/fuzz-logs/$t.log"
  mkdir -p "$work"
  seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
  # `timeout` bounds a run that libFuzzer itself would not stop (it checks
  # -max_total_time between inputs; -timeout catches one slow input).
  status=0
  timeout --kill-after=10 $((secs + 120)) \
    cargo fuzz run "${fuzz[@]}" "$t" "$work" "${seeds[@]}" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    continue
  fi
  failed+=("$t")
  echo "FAILED: fuzz target $t (exit $status); the end of libFuzzer's output ($log):" >&2
  tail -n 80 "$log" >&2
  input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  if [ -n "$input" ]; then
    echo "crashing input: $input" >&2
    echo "reproduce: cargo fuzz run ${fuzz[*]} $t $input" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
echo "==> fuzzing passed: ${targets[*]}"
