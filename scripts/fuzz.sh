#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads untrusted input (fuzz/fuzz_targets/*.rs),
# one target at a time, then one table: target, runs, seconds, corpus size, crashes.
#
#   scripts/fuzz.sh                 every target for FUZZ_SECONDS (default 600) each
#   scripts/fuzz.sh --quick         every target over its seed corpus only (-runs=0), the build
#                                   bounded by FUZZ_BUILD_TIMEOUT (default 120 s; exit 2 beyond)
#   FUZZ_TARGETS="krn tle" FUZZ_SECONDS=60 scripts/fuzz.sh
#
# Toolchain: cargo-fuzz passes -Z flags (sanitizers), which need a nightly compiler. The script
# uses `cargo +nightly` when a nightly toolchain is installed; otherwise the stable compiler with
# RUSTC_BOOTSTRAP=1, which unlocks the same flags. cargo-fuzz itself:
# `cargo install --locked cargo-fuzz` (about 2 minutes). Seeds live in fuzz/corpus/<target>
# (kept in git, read only); what the fuzzer finds goes to fuzz/work/<target> (ignored); crashes
# to fuzz/artifacts/<target>/ (reproduce: `cargo +nightly fuzz run <target> <file>`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
SECONDS_EACH="${FUZZ_SECONDS:-600}"
LIMIT=(-max_total_time="$SECONDS_EACH")
BUILD_TIMEOUT=0
if ((QUICK)); then
  LIMIT=(-runs=0)
  [[ -n "${FUZZ_SECONDS:-}" ]] && LIMIT=(-max_total_time="$FUZZ_SECONDS")
  BUILD_TIMEOUT="${FUZZ_BUILD_TIMEOUT:-120}"
fi
TARGETS="${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v kaa-iam-fuzz)}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed: cargo install --locked cargo-fuzz"
  exit 1
fi
if cargo +nightly --version >/dev/null 2>&1; then
  CARGO=(cargo +nightly)
  echo "fuzz: toolchain $(cargo +nightly --version)"
else
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
  echo "fuzz: no nightly toolchain; stable $(cargo --version) with RUSTC_BOOTSTRAP=1"
fi

# The quick pass only reuses an earlier build: a first build with sanitizers takes many minutes,
# far beyond CI's budget (a fresh clone therefore reports n/a).
if ((QUICK)) && [[ ! -d target ]]; then
  echo "fuzz: no earlier build in fuzz/target: run scripts/fuzz.sh once; the corpus pass is skipped"
  exit 2
fi

echo "fuzz: building $(echo $TARGETS | wc -w) targets"
: >/tmp/kaa-fuzz-build.log
for t in $TARGETS; do
  rc=0
  if ((BUILD_TIMEOUT)); then
    timeout "$BUILD_TIMEOUT" "${CARGO[@]}" fuzz build -O "$t" >>/tmp/kaa-fuzz-build.log 2>&1 || rc=$?
  else
    "${CARGO[@]}" fuzz build -O "$t" >>/tmp/kaa-fuzz-build.log 2>&1 || rc=$?
  fi
  if ((rc == 124)); then
    echo "fuzz: the build took longer than ${BUILD_TIMEOUT}s (a first build with sanitizers takes minutes: run scripts/fuzz.sh once)"
    exit 2
  elif ((rc != 0)); then
    tail -30 /tmp/kaa-fuzz-build.log
    echo "fuzz: build failed"
    exit 1
  fi
done

declare -a ROWS
FAILED=0
for t in $TARGETS; do
  mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  log="/tmp/kaa-fuzz-$t$( ((QUICK)) && echo -quick).log"
  start=$(date +%s)
  rc=0
  "${CARGO[@]}" fuzz run -O "$t" "work/$t" "corpus/$t" -- \
    "${LIMIT[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [[ -z "$runs" ]] && runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  crashes=$(($(ls "artifacts/$t" | wc -l) - before))
  if ((rc != 0)) && ((crashes == 0)); then crashes="error(rc=$rc)"; fi
  [[ "$crashes" != "0" ]] && { FAILED=1; grep -m5 -E 'panicked|ERROR|SUMMARY' "$log" || true; }
  ROWS+=("$(printf '%-12s %12s %8s %6s %8s %s' "$t" "${runs:-?}" "$took" "${cov:-?}" "$(ls "work/$t" | wc -l)" "$crashes")")
done

echo
printf '%-12s %12s %8s %6s %8s %s\n' target runs seconds cov corpus crashes
for r in "${ROWS[@]}"; do echo "$r"; done
exit $FAILED
