#!/usr/bin/env bash
# IAM side by side with the services a platform team would pick instead, over HTTP on the same
# questions in one run: Open Policy Agent (`opa run --server`), OpenFGA (`openfga run` on its
# SQLite datastore, as IAM runs here) and Cedar behind permitio's cedar-agent.
#
# For each size: `iam generate` makes one tenant (users, groups nested up to 4 levels, policies
# with wildcards and denies) into a fresh SQLite file and exports it as JSON (--export);
# scripts/bench-peers.py translates it into each peer's model (OPA: the tenant as data plus one
# Rego module with IAM's statement semantics; OpenFGA: an authorization model and tuples; Cedar:
# one policy per statement plus the users, groups and action groups as entities). Each system is
# started on the tenant (time to load: process start until it answers with the tenant loaded;
# for OpenFGA, until its tuples are written), its answers are checked against IAM's on the
# generator's sample requests, then wrk drives it with the same request mix (one decision per
# request, and BATCH decisions per request where the peer has a batch form: OPA's input list,
# OpenFGA's BatchCheck; cedar-agent has none) at each concurrency of CONNS. Prints one table with
# every figure and its ratio to IAM's in the same run.
#
#   scripts/bench-peers.sh                      # 1k, 10k and 50k statements, c=1 and c=64, 10 s runs
#   SIZES=1k DURATION=3s scripts/bench-peers.sh # quick
#   scripts/bench-peers.sh --check              # tiny tenant: install, translate, check answers; no wrk
#
# Peers are installed by package name with their ordinary clients into KAA_PEERS_CACHE
# (~/.cache/kaa-peers): `go install` of OPA and OpenFGA, `cargo install --locked` of cedar-agent,
# at the pinned versions below. A peer that cannot be had is skipped with one line saying why.
#
# Environment: SIZES ("1k 10k 50k"; also 100k, or any N with `k`), PEERS ("opa openfga cedar"),
# CONNS ("1 64"), DURATION (10s), BATCH (100), SAMPLES (1000 single samples; a tenth as many
# batches), CHECK_SAMPLES (single samples whose answers are checked, 1000), CHECK_BATCHES (batch
# samples checked, 20), FGA_ACTION_WILDCARDS (expand | relations, see bench-peers.py), FGA_ENGINE
# (OpenFGA's datastore: sqlite, a file in the work directory, or memory), SEED (1), KAA_PEERS_CACHE, OPA_VERSION, OPENFGA_VERSION, CEDAR_AGENT_VERSION,
# PORT_BASE (18190: IAM, +1 OPA, +2/+3 OpenFGA HTTP/gRPC, +4 cedar-agent), READY_TIMEOUT (s, 600),
# KEEP (1: keep the work directory).
#
# wrk runs on the same machine as the servers: on a 2-core box both compete for the CPUs, so read
# the ratios (every system had the same client and the same machine minutes apart), not the
# absolute figures as capacity.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=bench
case "${1:-}" in
    --check) MODE=check ;;
    "") ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

OPA_VERSION=${OPA_VERSION:-v1.22.4}
OPENFGA_VERSION=${OPENFGA_VERSION:-v1.23.0}
CEDAR_AGENT_VERSION=${CEDAR_AGENT_VERSION:-0.2.0}
CACHE=${KAA_PEERS_CACHE:-$HOME/.cache/kaa-peers}
SIZES=${SIZES:-"1k 10k 50k"}
PEERS=${PEERS:-"opa openfga cedar"}
CONNS=${CONNS:-"1 64"}
DURATION=${DURATION:-10s}
BATCH=${BATCH:-100}
SAMPLES=${SAMPLES:-1000}
CHECK_SAMPLES=${CHECK_SAMPLES:-1000}
SEED=${SEED:-1}
PORT_BASE=${PORT_BASE:-18190}
READY_TIMEOUT=${READY_TIMEOUT:-600}
FGA_ENGINE=${FGA_ENGINE:-sqlite}
KEEP=${KEEP:-0}
IAM_PORT=$PORT_BASE
OPA_PORT=$((PORT_BASE + 1))
FGA_PORT=$((PORT_BASE + 2))
FGA_GRPC_PORT=$((PORT_BASE + 3))
CEDAR_PORT=$((PORT_BASE + 4))
TENANT=bench
PY="$ROOT/scripts/bench-peers.py"

if [ "$MODE" = check ]; then
    SIZES=check
fi
dur_s=${DURATION%s}
case "$dur_s" in '' | *[!0-9]*) echo "DURATION must be whole seconds such as 10s, got $DURATION" >&2; exit 2 ;; esac

for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done
if [ "$MODE" = bench ] && ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found: installing it with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi

WORK=$(mktemp -d /tmp/bench-peers.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---------------------------------------------------------------- peers: install

mkdir -p "$CACHE/bin" "$CACHE/log"
declare -A SKIP
declare -A BIN
BIN[opa]="$CACHE/bin/opa"
BIN[openfga]="$CACHE/bin/openfga"
BIN[cedar]="$CACHE/bin/cedar-agent"

go_mod_version() { # BINARY MODULE VERSION: the binary was built from that module version
    [ -x "$1" ] && command -v go >/dev/null 2>&1 && go version -m "$1" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3[[:space:]]"
}

have_version() { # NAME: the cached binary is the pinned version
    case "$1" in
        opa) go_mod_version "${BIN[opa]}" github.com/open-policy-agent/opa "$OPA_VERSION" ;;
        openfga) go_mod_version "${BIN[openfga]}" github.com/openfga/openfga "$OPENFGA_VERSION" ;;
        cedar) grep -q "\"cedar-agent $CEDAR_AGENT_VERSION " "$CACHE/.crates.toml" 2>/dev/null && [ -x "${BIN[cedar]}" ] ;;
    esac
}

install_peer() { # NAME: install into the cache with the ordinary client; log to $CACHE/log
    local name=$1 log="$CACHE/log/$1.log"
    case "$name" in
        opa) GOBIN="$CACHE/bin" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$OPA_VERSION" ;;
        openfga) GOBIN="$CACHE/bin" GOFLAGS=-buildvcs=false go install "github.com/openfga/openfga/cmd/openfga@$OPENFGA_VERSION" ;;
        cedar) CARGO_TARGET_DIR="$CACHE/cargo-target" cargo install --locked cedar-agent --version "$CEDAR_AGENT_VERSION" --root "$CACHE" ;;
    esac >"$log" 2>&1
}

echo "== peers (cache $CACHE)"
declare -A INSTALL_PID
for p in $PEERS; do
    case "$p" in
        opa | openfga)
            if have_version "$p"; then continue; fi
            if ! command -v go >/dev/null 2>&1; then SKIP[$p]="go is not installed"; continue; fi ;;
        cedar)
            if have_version "$p"; then continue; fi ;;
        *) echo "unknown peer $p (opa, openfga, cedar)" >&2; exit 2 ;;
    esac
    echo "  installing $p in the background (log: $CACHE/log/$p.log)"
    install_peer "$p" &
    INSTALL_PID[$p]=$!
done

echo "== building release iam"
cargo build --release --bin iam
IAM="$ROOT/target/release/iam"

for p in $PEERS; do
    if [ -n "${INSTALL_PID[$p]:-}" ]; then
        if ! wait "${INSTALL_PID[$p]}"; then
            SKIP[$p]="install failed: $(grep -m1 -iE 'error|cannot|not found|refused' "$CACHE/log/$p.log" || tail -n 1 "$CACHE/log/$p.log")"
        elif ! have_version "$p"; then
            SKIP[$p]="installed, but the binary does not report the pinned version"
        fi
    fi
    if [ -n "${SKIP[$p]:-}" ]; then
        echo "  $p: skipped: ${SKIP[$p]}"
    fi
done
ACTIVE=()
for p in $PEERS; do [ -z "${SKIP[$p]:-}" ] && ACTIVE+=("$p"); done
echo "  peers: iam ${ACTIVE[*]+"${ACTIVE[*]}"} (opa $OPA_VERSION, openfga $OPENFGA_VERSION, cedar-agent $CEDAR_AGENT_VERSION)"

# ---------------------------------------------------------------- helpers

cat >"$WORK/evaluate.lua" <<'LUA'
-- Cycles through request bodies, one per line of the file given after `--`; each thread starts
-- at its own offset. Requests are formatted once, at start.
local counter = 0
function setup(thread)
    thread:set("tid", counter)
    counter = counter + 1
end
local reqs = {}
local i = 0
function init(args)
    for line in io.lines(args[1]) do
        if #line > 0 then
            reqs[#reqs + 1] = wrk.format("POST", args[2], { ["Content-Type"] = "application/json" }, line)
        end
    end
    i = ((tid or 0) * 7919) % #reqs
end
function request()
    i = i + 1
    if i > #reqs then i = 1 end
    return reqs[i]
end
LUA

# wrk prints latencies as 12.34us / 1.20ms / 1.00s: convert to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.0f", n * m
    }'
}
fmt_us() { awk -v u="$1" 'BEGIN { if (u >= 1000000) printf "%.2f s", u / 1000000; else if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%d us", u }'; }
fmt_ms() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.1f s", u / 1000; else printf "%d ms", u }'; }
wrk_rps() { awk '/^Requests\/sec:/ { printf "%.2f", $2 }' "$1"; }
# A rate as printed: one decimal below 10 (a batch form may finish a few requests a second).
fmt_rate() { awk -v r="$1" -v m="${2:-1}" 'BEGIN { v = r * m; if (v < 10) printf "%.1f", v; else printf "%.0f", v }'; }
wrk_pct() { to_us "$(awk -v p="$2" '$1 == p { print $2 }' "$1")"; }
wrk_non2xx() { awk '/Non-2xx/ { print $NF }' "$1" | head -1; }
wrk_errors() { awk -F'Socket errors: ' '/Socket errors/ { print $2 }' "$1" | head -1; }
rss_mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_http() { # URL PID WANT_CODE: wait until URL answers WANT_CODE (or the process dies / times out)
    local url=$1 pid=$2 want=$3
    local deadline=$(( $(now_ms) + READY_TIMEOUT * 1000 ))
    while :; do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [ "$code" = "$want" ] && return 0
        [ "$(now_ms)" -gt "$deadline" ] && return 1
        sleep 0.01
    done
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

size_n() { # 1k -> 1000, 50k -> 50000, 300 -> 300
    case "$1" in
        *k) echo $(( ${1%k} * 1000 )) ;;
        *[!0-9]*) echo "SIZES takes numbers such as 1k 10k 50k, got $1" >&2; exit 2 ;;
        *) echo "$1" ;;
    esac
}

declare -A R    # R[size|system|workload|c] = "rps p50 p99 non2xx errors"
declare -A INFO # INFO[size|system|load|rss|hwm|check]
NOTES=()
BAD=0

# start SYSTEM DIR: start the system on the translated tenant in DIR; sets PID, and LOAD_MS (from
# process start to the tenant answering). Returns 1 when it did not come up.
start_system() {
    local sys=$1 dir=$2 t0
    t0=$(now_ms)
    case "$sys" in
        iam)
            env -i PATH="$PATH" HOME="${HOME:-/tmp}" APP_CONFIG_PATH="$dir/iam.yml" KAA_SQLITE_PATH="$dir/iam.db" \
                "$IAM" >"$dir/iam.log" 2>&1 &
            PID=$!; PIDS+=("$PID")
            wait_http "http://127.0.0.1:$IAM_PORT/health/ready" "$PID" 200 || return 1 ;;
        opa)
            "${BIN[opa]}" run --server --addr "127.0.0.1:$OPA_PORT" --log-level error --skip-version-check \
                "$dir/peers/opa" >"$dir/opa.log" 2>&1 &
            PID=$!; PIDS+=("$PID")
            wait_http "http://127.0.0.1:$OPA_PORT/health" "$PID" 200 || return 1 ;;
        openfga)
            # SQLite, as IAM runs here: OpenFGA's memory store scans every tuple of the store on
            # each read (pkg/storage/memory), which is for tests, not for tens of thousands of tuples.
            local fga_db=(--datastore-engine "$FGA_ENGINE")
            if [ "$FGA_ENGINE" = sqlite ]; then
                rm -f "$dir/openfga.db"*
                fga_db+=(--datastore-uri "file:$dir/openfga.db")
                "${BIN[openfga]}" migrate "${fga_db[@]}" >"$dir/openfga-migrate.log" 2>&1 || return 1
            fi
            "${BIN[openfga]}" run "${fga_db[@]}" --http-addr "127.0.0.1:$FGA_PORT" \
                --grpc-addr "127.0.0.1:$FGA_GRPC_PORT" --playground-enabled=false --metrics-enabled=false \
                --log-level error --max-checks-per-batch-check "$BATCH" --request-timeout 60s \
                --http-upstream-timeout 60s >"$dir/openfga.log" 2>&1 &
            PID=$!; PIDS+=("$PID")
            wait_http "http://127.0.0.1:$FGA_PORT/healthz" "$PID" 200 || return 1
            python3 "$PY" fga-load "http://127.0.0.1:$FGA_PORT" "$dir/peers" | sed 's/^/  /' || return 1 ;;
        cedar)
            ROCKET_LOG_LEVEL=off "${BIN[cedar]}" --addr 127.0.0.1 --port "$CEDAR_PORT" --log-level error \
                --policies "$dir/peers/cedar/policies.json" --data "$dir/peers/cedar/entities.json" >"$dir/cedar.log" 2>&1 &
            PID=$!; PIDS+=("$PID")
            wait_http "http://127.0.0.1:$CEDAR_PORT/v1/" "$PID" 204 || return 1 ;;
    esac
    LOAD_MS=$(( $(now_ms) - t0 ))
}

url_of() {
    case "$1" in
        iam) echo "http://127.0.0.1:$IAM_PORT" ;;
        opa) echo "http://127.0.0.1:$OPA_PORT" ;;
        openfga) echo "http://127.0.0.1:$FGA_PORT" ;;
        cedar) echo "http://127.0.0.1:$CEDAR_PORT" ;;
    esac
}

# requests SYSTEM WORKLOAD DIR -> "FILE PATH", or nothing when the system has no such form.
requests_of() {
    local sys=$1 wl=$2 dir=$3
    case "$sys|$wl" in
        iam\|single) echo "$dir/req.single.jsonl /api/v1/evaluate" ;;
        iam\|batch) echo "$dir/req.batch.jsonl /api/v1/evaluate?filterResources=true" ;;
        opa\|single) echo "$dir/peers/opa.single.jsonl /v1/data/iam/decisions" ;;
        opa\|batch) echo "$dir/peers/opa.batch.jsonl /v1/data/iam/decisions" ;;
        openfga\|single) echo "$dir/peers/fga.single.jsonl $(cat "$dir/peers/fga.path")/check" ;;
        openfga\|batch) echo "$dir/peers/fga.batch.jsonl $(cat "$dir/peers/fga.path")/batch-check" ;;
        cedar\|single) echo "$dir/peers/cedar.single.jsonl /v1/is_authorized" ;;
    esac
}

run_system() { # SIZE SYSTEM DIR
    local size=$1 sys=$2 dir=$3 py=$sys
    [ "$sys" = openfga ] && py=fga
    echo
    echo "== $size: $sys"
    if ! start_system "$sys" "$dir"; then
        tail -n 20 "$dir/$sys.log" >&2 || true
        NOTES+=("$size $sys: did not come up within ${READY_TIMEOUT}s: skipped")
        [ -n "${PID:-}" ] && stop_pid "$PID"
        return 0
    fi
    local pid=$PID
    INFO["$size|$sys|load"]=$LOAD_MS
    INFO["$size|$sys|rss"]=$(rss_mib "$pid" VmRSS)
    echo "  loaded in $(fmt_ms "$LOAD_MS"); VmRSS ${INFO["$size|$sys|rss"]} MiB"
    local check_out rc=0
    check_out=$(CHECK_BATCHES=${CHECK_BATCHES:-20} python3 "$PY" check "$py" "$(url_of "$sys")" "$dir/peers" "$dir/peers/expected.json" "$CHECK_SAMPLES" 2>&1) || rc=$?
    echo "$check_out" | sed 's/^/  /'
    INFO["$size|$sys|check"]=$(echo "$check_out" | head -1)
    if [ "$rc" != 0 ]; then
        BAD=1
        NOTES+=("$size $sys: answers differ from IAM's: ${INFO["$size|$sys|check"]}")
    fi
    if [ "$MODE" = bench ]; then
        for wl in single batch; do
            local spec; spec=$(requests_of "$sys" "$wl" "$dir")
            [ -z "$spec" ] && continue
            local file=${spec%% *} path=${spec#* }
            for c in $CONNS; do
                local out="$dir/wrk-$sys-$wl-c$c.txt" threads=2
                [ "$c" -lt 2 ] && threads=1
                wrk -t"$threads" -c"$c" -d"$DURATION" --timeout 10s --latency -s "$WORK/evaluate.lua" \
                    "$(url_of "$sys")$path" -- "$file" "$path" >"$out" 2>&1 || true
                local rps p50 p99 non err
                rps=$(wrk_rps "$out"); p50=$(wrk_pct "$out" 50%); p99=$(wrk_pct "$out" 99%)
                non=$(wrk_non2xx "$out"); err=$(wrk_errors "$out")
                R["$size|$sys|$wl|$c"]="${rps:-0} ${p50:-0} ${p99:-0} ${non:-0}"
                printf '  %-6s c=%-3s %8s req/s  p50 %9s  p99 %9s  non-2xx %s%s\n' "$wl" "$c" "$(fmt_rate "${rps:-0}")" \
                    "$(fmt_us "${p50:-0}")" "$(fmt_us "${p99:-0}")" "${non:-0}" "${err:+  socket errors: $err}"
                if [ -n "$err" ]; then NOTES+=("$size $sys $wl c=$c: socket errors $err"); fi
                if [ "$sys" != iam ] && [ "${non:-0}" != 0 ]; then NOTES+=("$size $sys $wl c=$c: $non non-2xx answers"); fi
            done
        done
    fi
    INFO["$size|$sys|hwm"]=$(rss_mib "$pid" VmHWM)
    stop_pid "$pid"
}

# ---------------------------------------------------------------- run

echo
echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(uname -sr)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mode: $MODE; SIZES=\"$SIZES\" CONNS=\"$CONNS\" DURATION=$DURATION BATCH=$BATCH SAMPLES=$SAMPLES SEED=$SEED"

for size in $SIZES; do
    if [ "$size" = check ]; then
        n_st=300 n_users=50 n_groups=10 n_pol=60 n_samples=100 n_batch=10
    else
        n_st=$(size_n "$size")
        n_pol=$(( n_st / 5 )); n_users=$(( n_st / 5 )); n_groups=$(( n_st / 50 ))
        [ "$n_pol" -lt 1 ] && n_pol=1
        [ "$n_users" -lt 1 ] && n_users=1
        [ "$n_groups" -lt 1 ] && n_groups=1
        n_samples=$SAMPLES n_batch=$BATCH
    fi
    dir="$WORK/$size"
    mkdir -p "$dir"
    printf 'server:\n  port: %s\n' "$IAM_PORT" >"$dir/iam.yml"
    echo
    echo "== $size: generating $n_users users, $n_groups groups, $n_pol policies, $n_st statements"
    ( cd "$dir" && env -i PATH="$PATH" HOME="${HOME:-/tmp}" APP_CONFIG_PATH="$dir/iam.yml" KAA_SQLITE_PATH="$dir/iam.db" \
        "$IAM" generate --tenant "$TENANT" --users "$n_users" --groups "$n_groups" --policies "$n_pol" \
        --statements "$n_st" --seed "$SEED" --samples "$n_samples" --batch "$n_batch" --requests "$dir/req" \
        --export "$dir/tenant.json" ) >"$dir/gen.txt" 2>"$dir/gen.err" || { cat "$dir/gen.err" >&2; exit 1; }
    grep -E '^  statements|^requests-' "$dir/gen.txt" | sed 's/^ */  /'
    INFO["$size|mix"]=$(sed -n 's/^requests-single: //p' "$dir/gen.txt")
    python3 "$PY" translate "$dir/tenant.json" "$dir/req.expected.json" "$dir/peers" | sed 's/^/  /'
    for sys in iam "${ACTIVE[@]+"${ACTIVE[@]}"}"; do
        run_system "$size" "$sys" "$dir"
    done
    rm -f "$dir/iam.db" "$dir/tenant.json"
done

# ---------------------------------------------------------------- report

ratio() { # VALUE IAM_VALUE -> "x0.42" (x0.0004 below 0.01)
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") { r = a / b; if (r > 0 && r < 0.01) printf "x%.2g", r; else printf "x%.2f", r } else print "-" }'
}

echo
if [ "$MODE" = check ]; then
    echo "== translation check (tiny tenant)"
    for sys in iam "${ACTIVE[@]+"${ACTIVE[@]}"}"; do
        echo "  ${INFO["check|$sys|check"]:-$sys: no answer}"
    done
    for p in $PEERS; do [ -n "${SKIP[$p]:-}" ] && echo "  $p: skipped: ${SKIP[$p]}"; done
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
    exit "$BAD"
fi

echo "== results ($(date -u +%Y-%m-%dT%H:%M:%SZ); one run of $DURATION per row; wrk on the same machine)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Each figure with its ratio to IAM's in the same row group (peer / IAM: below x1 is IAM ahead"
echo "for req/s and decisions/s; above x1 is IAM ahead for latency, memory and load time)."
echo
echo "| statements | system | workload | conc. | req/s | decisions/s | p50 | p99 | VmRSS loaded | load time |"
echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
for size in $SIZES; do
    for sys in iam "${ACTIVE[@]+"${ACTIVE[@]}"}"; do
        rss=${INFO["$size|$sys|rss"]:-}
        [ -z "$rss" ] && continue
        irss=${INFO["$size|iam|rss"]:-0} load=${INFO["$size|$sys|load"]} iload=${INFO["$size|iam|load"]:-0}
        for wl in single batch; do
            for c in $CONNS; do
                v=${R["$size|$sys|$wl|$c"]:-}
                [ -z "$v" ] && continue
                read -r rps p50 p99 _ <<<"$v"
                iv=${R["$size|iam|$wl|$c"]:-"0 0 0 0"}
                read -r irps ip50 ip99 _ <<<"$iv"
                per=1
                [ "$wl" = batch ] && per=$BATCH
                wlname="1 resource"
                [ "$wl" = batch ] && wlname="$BATCH resources"
                if [ "$sys" = iam ]; then
                    echo "| $size | iam | $wlname | $c | $(fmt_rate "$rps") | $(fmt_rate "$rps" "$per") | $(fmt_us "$p50") | $(fmt_us "$p99") | $rss MiB | $(fmt_ms "$load") |"
                else
                    echo "| $size | $sys | $wlname | $c | $(fmt_rate "$rps") ($(ratio "$rps" "$irps")) | $(fmt_rate "$rps" "$per") ($(ratio "$rps" "$irps")) | $(fmt_us "$p50") ($(ratio "$p50" "$ip50")) | $(fmt_us "$p99") ($(ratio "$p99" "$ip99")) | $rss MiB ($(ratio "$rss" "$irss")) | $(fmt_ms "$load") ($(ratio "$load" "$iload")) |"
                fi
            done
        done
    done
done
echo
for size in $SIZES; do
    echo "$size statements: single-resource sample mix ${INFO["$size|mix"]:-?}"
    for sys in iam "${ACTIVE[@]+"${ACTIVE[@]}"}"; do
        [ -n "${INFO["$size|$sys|check"]:-}" ] && echo "  ${INFO["$size|$sys|check"]}; VmHWM at the end ${INFO["$size|$sys|hwm"]:-?} MiB"
    done
done
for p in $PEERS; do [ -n "${SKIP[$p]:-}" ] && echo "$p: skipped: ${SKIP[$p]}"; done
for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
exit 0
