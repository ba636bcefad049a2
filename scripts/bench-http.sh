#!/usr/bin/env bash
# Load bench of the bare connection layer (kaa::http::server, examples/bare_server.rs): a fixed
# 60-byte JSON answer to a keep-alive POST, measured with wrk at several connection counts, each
# run RUNS times; prints the medians of req/s and of the p50/p99 latencies.
#
#   scripts/bench-http.sh                 # c = 1, 8, 64; 10 s per run; 3 runs
#   CONNS="64" DURATION=5s RUNS=5 scripts/bench-http.sh
#
# wrk runs on the same machine as the server: on a 2-core box both compete for the CPUs, so read
# the figures side by side with others taken the same way (TOOLING.md), not as absolute capacity.
set -euo pipefail

cd "$(dirname "$0")/.."

CONNS=${CONNS:-"1 8 64"}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
PORT=${PORT:-18089}
BENCH_WORKERS=${BENCH_WORKERS:-16}
export BENCH_WORKERS

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found: installing it with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi

cargo build --release --example bare_server
BIN=target/release/examples/bare_server

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" "127.0.0.1:$PORT" >"$WORK/server.out" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/server.out" 2>/dev/null && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "bare_server did not start:" >&2
        cat "$WORK/server.out" >&2
        exit 1
    fi
    sleep 0.1
done
grep -q "listening on" "$WORK/server.out" || { echo "bare_server did not start in 10 s" >&2; exit 1; }

# A keep-alive POST of a 156-byte JSON body, like an evaluate call.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"principal":"krn:iam:kaa::user/alice","action":"iam:user:read","resources":["krn:iam:kaa::user/bob","krn:iam:kaa::user/carol"],"explain":false,"pad":"xxx"}'
wrk.headers["Content-Type"] = "application/json"
LUA

# wrk prints latencies as 12.34us / 1.20ms / 1.00s: convert to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.0f", n * m
    }'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo
echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(uname -sr)"
echo "server:  bare_server (workers=$BENCH_WORKERS), 60-byte JSON answer; wrk $DURATION x $RUNS runs per row"
echo

ROWS=()
for c in $CONNS; do
    threads=2
    [ "$c" -lt 2 ] && threads=1
    rps_all="" p50_all="" p99_all="" errors=""
    for run in $(seq 1 "$RUNS"); do
        out="$WORK/wrk-c$c-$run.txt"
        wrk -t"$threads" -c"$c" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$PORT/bench" >"$out"
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
        p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
        bad=$(awk '/Non-2xx|Socket errors/' "$out" | tr -s ' ' | tr '\n' ';')
        [ -n "$bad" ] && errors="$errors run $run: $bad"
        echo "c=$c run $run: $rps req/s, p50 ${p50} us, p99 ${p99} us${bad:+ ($bad)}"
        rps_all="$rps_all $rps" p50_all="$p50_all $p50" p99_all="$p99_all $p99"
    done
    ROWS+=("$(printf '%6s | %10s | %10s | %10s | %s' "$c" "$(echo "$rps_all" | median)" \
        "$(echo "$p50_all" | median)" "$(echo "$p99_all" | median)" "${errors:-none}")")
done

echo
echo "medians of $RUNS runs ($DURATION each):"
printf '%6s | %10s | %10s | %10s | %s\n' "conns" "req/s" "p50 us" "p99 us" "errors"
printf '%6s-+-%10s-+-%10s-+-%10s-+-%s\n' "------" "----------" "----------" "----------" "------"
for row in "${ROWS[@]}"; do echo "$row"; done
