#!/usr/bin/env bash
# CPU time of an `iam` binary per answered request: a measure that holds up on a loaded machine
# better than req/s (it counts the server's own user+system time, not the time it waited for a
# core), for A/B comparisons of two builds taken back to back.
#
#   KEEP=1 BACKENDS=sqlite CONNS=1 DURATION=2s WRITES=0 scripts/bench-iam.sh   # keeps its work dir
#   scripts/cpu-per-request.sh /tmp/bench-iam.XXXX target/release/iam [other/iam ...]
#
# Each binary in turn serves the work directory's SQLite tenant (its `iam.yml`, `iam.db`) while
# wrk drives single-resource evaluate (the work directory's `req.single.jsonl`) for DURATION
# (10s) at C connections (16) after a 2 s warm-up. Environment: C, DURATION, ROUNDS (3: the
# binaries alternate, one line per run).
set -euo pipefail
W=${1:?usage: $0 WORK_DIR BIN [BIN ...]}; shift
[ $# -ge 1 ] || { echo "usage: $0 WORK_DIR BIN [BIN ...]" >&2; exit 2; }
C=${C:-16}; DURATION=${DURATION:-10s}; ROUNDS=${ROUNDS:-3}
port=$(awk '/port:/ {print $2; exit}' "$W/iam.yml")
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        bin=$(realpath "$bin")
        ( cd "$W" && exec env -i PATH="$PATH" HOME=/tmp APP_CONFIG_PATH="$W/iam.yml" KAA_SQLITE_PATH="$W/iam.db" "$bin" ) >"$W/cpu-per-request.log" 2>&1 &
        pid=$!
        for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready" && break; sleep 0.2; done
        wrk -t2 -c"$C" -d2s -s "$W/evaluate.lua" "http://127.0.0.1:$port" -- "$W/req.single.jsonl" >/dev/null 2>&1
        t0=$(cpu "$pid")
        out=$(wrk -t2 -c"$C" -d"$DURATION" -s "$W/evaluate.lua" "http://127.0.0.1:$port" -- "$W/req.single.jsonl" 2>&1)
        t1=$(cpu "$pid")
        reqs=$(echo "$out" | awk '/requests in/ {print $1}')
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        kill "$pid"; wait "$pid" 2>/dev/null || true
        awk -v b="$bin" -v a="$t0" -v z="$t1" -v r="$reqs" -v s="$rps" -v t="$tck" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
            'BEGIN { printf "%s: %d requests, %s req/s, %.2f us CPU per request (load %s)\n", b, r, s, (z - a) / t * 1e6 / r, l }'
    done
done
