#!/usr/bin/env bash
# Reliability and security checks, one summary table at the end.
#
#   scripts/reliability.sh           everything: abusive clients, fault runs, fuzzing
#                                    (FUZZ_SECONDS each, default 600), API fuzzing, soak
#                                    (SOAK_MINUTES, default 10); about 1.5 hours
#   scripts/reliability.sh --quick   the quick parts (CI): abusive clients, the replicas' lag
#                                    against its bound, the Tenant Manager's OpenAPI check, and
#                                    the fuzz targets over their seed corpora when cargo-fuzz and
#                                    its build are at hand
#
# The fault runs and the abusive-client tests need IAM_TEST_POSTGRES_URL and IAM_TEST_NATS_URL
# (see README); the full-disk run mounts a tmpfs (root).
set -uo pipefail
cd "$(dirname "$0")/.."
export IAM_TEST_POSTGRES_URL="${IAM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export IAM_TEST_NATS_URL="${IAM_TEST_NATS_URL:-nats://127.0.0.1:4222}"

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
declare -a ROWS
FAILED=0

row() { # name, status, seconds, figures
  ROWS+=("$(printf '%-26s %-5s %6ss  %s' "$1" "$2" "$3" "$4")")
  [[ "$2" == ok || "$2" == n/a ]] || FAILED=1
}

run_tests() { # name, log, cargo test args...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS rc=0
  cargo test --locked "$@" >"$log" 2>&1 || rc=$?
  local figures
  figures=$(grep -c '^measured:' "$log")
  if grep -q '^skipped:' "$log"; then rc=1; fi
  row "$name" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" $((SECONDS - t0)) \
    "$(grep -o 'test result: .*' "$log" | tail -1 | cut -d';' -f1-3); ${figures} figures in $log"
  grep '^measured:' "$log" | sed 's/^/    /'
  [[ $rc == 0 ]] || { grep -E '^(skipped:|---- |thread .* panicked)' "$log" | head -20; }
}

bound_max_ms() { # name, log, label of a `measured:` line ending "max N ms", bound in ms
  local max
  max=$(grep -o "measured: $3:.*" "$2" | grep -o 'max [0-9.]* ms' | tail -1 | awk '{print $2}')
  if [[ -z "$max" ]]; then
    row "$1" FAIL 0 "no measured line \"$3\" in $2"
  elif awk -v m="$max" -v b="$4" 'BEGIN { exit !(m <= b) }'; then
    row "$1" ok 0 "max $max ms <= $4 ms"
  else
    row "$1" FAIL 0 "max $max ms > $4 ms"
  fi
}

echo "== abusive clients (tests/http_abuse.rs)"
run_tests "abusive clients" /tmp/kaa-rel-abuse.log --test http_abuse -- --test-threads 3

# Latency bounds live here, not in the functional tests (which wait on conditions): a write on
# one replica is decided on by another within a second, by NATS notice or by polling.
echo "== replica lag (tests/iam_replica_notices.rs)"
run_tests "replica lag" /tmp/kaa-rel-replicas.log --test iam_replica_notices -- --test-threads 1
bound_max_ms "replica lag, NATS" /tmp/kaa-rel-replicas.log "NATS up" 1000
bound_max_ms "replica lag, polling" /tmp/kaa-rel-replicas.log "NATS absent (polling)" 1000

echo "== Tenant Manager OpenAPI (tests/tm_openapi.rs)"
run_tests "tm openapi" /tmp/kaa-rel-tm-openapi.log --test tm_openapi

if ((QUICK)); then
  echo "== fuzz targets over their seed corpora"
  t0=$SECONDS
  if cargo fuzz --version >/dev/null 2>&1; then
    rc=0
    scripts/fuzz.sh --quick >/tmp/kaa-rel-fuzz.log 2>&1 || rc=$?
    case $rc in
      0) row "fuzz (seed corpora)" ok $((SECONDS - t0)) "$(awk '/^target/ {p=1; next} p {printf "%s %s runs %s crashes; ", $1, $2, $6}' /tmp/kaa-rel-fuzz.log)" ;;
      2) row "fuzz (seed corpora)" n/a $((SECONDS - t0)) "$(tail -1 /tmp/kaa-rel-fuzz.log)" ;;
      *) row "fuzz (seed corpora)" FAIL $((SECONDS - t0)) "see /tmp/kaa-rel-fuzz.log"; tail -20 /tmp/kaa-rel-fuzz.log ;;
    esac
  else
    row "fuzz (seed corpora)" n/a 0 "cargo-fuzz or its first build (scripts/fuzz.sh) not here; tests/policy_fuzz.rs covers the policy parsers on stable"
  fi
else
  echo "== fault runs (tests/fault_runs.rs)"
  run_tests "fault runs" /tmp/kaa-rel-faults.log --test fault_runs -- --test-threads 2

  echo "== fuzzing (scripts/fuzz.sh, ${FUZZ_SECONDS:-600} s per target)"
  t0=$SECONDS
  if scripts/fuzz.sh >/tmp/kaa-rel-fuzz.log 2>&1; then st=ok; else st=FAIL; fi
  row "fuzz" $st $((SECONDS - t0)) "table in /tmp/kaa-rel-fuzz.log"
  sed -n '/^target/,$p' /tmp/kaa-rel-fuzz.log | sed 's/^/    /'

  echo "== API fuzzing (scripts/api-fuzz.sh)"
  t0=$SECONDS
  if scripts/api-fuzz.sh >/tmp/kaa-rel-api-fuzz.log 2>&1; then st=ok; else st=FAIL; fi
  row "api fuzz" $st $((SECONDS - t0)) "$(grep '^api-fuzz:' /tmp/kaa-rel-api-fuzz.log | tr '\n' ' ')"

  echo "== soak (scripts/soak.sh, ${SOAK_MINUTES:-10} min)"
  t0=$SECONDS
  if scripts/soak.sh >/tmp/kaa-rel-soak.log 2>&1; then st=ok; else st=FAIL; fi
  row "soak" $st $((SECONDS - t0)) "summary in /tmp/kaa-rel-soak.log"
  sed -n '/== soak summary/,$p' /tmp/kaa-rel-soak.log | sed 's/^/    /'
fi

echo
echo "== reliability summary ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-26s %-5s %7s  %s\n' check status time figures
for r in "${ROWS[@]}"; do echo "$r"; done
exit $FAILED
