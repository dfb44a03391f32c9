#!/usr/bin/env bash
# Runs the fuzz targets (see fuzz/README.md). Used by `make fuzz` and `make fuzz-smoke`.
#
#   fuzz/run.sh fuzz  SECONDS [TARGET...]   cargo-fuzz (installed if missing), optimised build,
#                                           each target SECONDS with the seed corpus; new inputs
#                                           go to fuzz/work/corpus/<target>, crashes to
#                                           fuzz/artifacts/<target>/
#   fuzz/run.sh smoke SECONDS [TARGET...]   a quick build with plain cargo (no cargo-fuzz needed),
#                                           each target SECONDS from a fixed seed
#
# Every target runs even if one fails; the exit status is non-zero if any found a crash or an
# oracle failure. Only stable Rust is needed: cargo-fuzz's nightly flags go through
# RUSTC_BOOTSTRAP=1, and no sanitizer is used (the filter and its decoder are safe Rust: the
# oracles and Rust's own checks do the finding).
set -uo pipefail

mode=${1:?usage: fuzz/run.sh fuzz|smoke SECONDS [TARGET...]}
seconds=${2:?usage: fuzz/run.sh fuzz|smoke SECONDS [TARGET...]}
shift 2
cd "$(dirname "$0")"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_stream response_stream prefix_rule canary_rule acl)
triple=$(rustc -vV | sed -n 's/^host: //p')
# Inputs of the rule targets are sequences of operations: give them room.
args=(-max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

case "$mode" in
  fuzz)
    cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked || exit 1
    RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz build -s none || exit 1
    bin=target/$triple/release
    ;;
  smoke)
    # What cargo-fuzz (0.13) passes to rustc for coverage-guided fuzzing without a sanitizer,
    # on the dev profile (opt-level 1 in Cargo.toml): builds in about two minutes.
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions"
    nice -n 10 cargo build --bins --target "$triple" --target-dir target/smoke || exit 1
    unset RUSTFLAGS
    bin=target/smoke/$triple/debug
    # A fixed seed and a fixed number of runs: the same inputs on every machine, so a smoke run
    # in CI fails only on a change, not on a faster machine reaching further. The time is a cap.
    args+=(-seed=1 -runs=$((seconds * 1000)))
    seconds=$((seconds * 4))
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

failed=()
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t" "work/corpus/$t"
  if [ "$mode" = smoke ]; then
    work=work/smoke/$t
    rm -rf "$work"
    mkdir -p "$work"
  else
    work=work/corpus/$t
  fi
  log=work/$t.$mode.log
  echo "== $t: $seconds s (log: fuzz/$log)"
  # The first directory receives new inputs; the committed seeds are only read.
  nice -n 10 "$bin/$t" "${args[@]}" -max_total_time="$seconds" \
    -artifact_prefix="artifacts/$t/" "$work" "corpus/$t" >"$log" 2>&1
  rc=$?
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec)|DONE" "$log" | tail -3
  if [ $rc -ne 0 ]; then
    grep -E "ORACLE|panicked at|ERROR|Test unit written" "$log" | head -6
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (reproducers in fuzz/artifacts/; replay one with" \
       "KAFKA_FUZZ_VERBOSE=1 $bin/<target> <file>)" >&2
  exit 1
fi
