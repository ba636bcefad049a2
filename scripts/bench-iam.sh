#!/usr/bin/env bash
# IAM over HTTP, side by side with the bare connection layer, on SQLite and PostgreSQL (issue 8).
#
# For each backend: generate a tenant with `iam generate` into a fresh database, start `iam` on
# it (time from process start to /health/ready answering 200, resident memory once loaded), drive
# POST /api/v1/evaluate with wrk for (a) one resource per request and (b) BATCH resources per
# request (?filterResources=true, so a mixed batch answers 200), at each concurrency of CONNS for
# DURATION, then time policy and user writes through the API. Then the bare server
# (examples/bare_server.rs: the project's connection layer answering a fixed JSON inline, as IAM's
# decisions run) and the bare hyper server (examples/bare_hyper.rs: hyper alone, no layer) are
# driven with the same request bodies in the same run. Prints one
# table: backend, workload, concurrency, req/s, decisions/s, p50, p99, ratio to the bare server
# at the same concurrency, wrk's non-2xx and socket errors, and how many connections made
# progress (wrk reports nothing for a connection that never gets an answer: the script samples
# the client sockets' received bytes with `ss` twice per run).
#
#   scripts/bench-iam.sh                         # issue sizes: 10k users, 1k groups, 10k policies, 50k statements
#   SIZE=1m scripts/bench-iam.sh                 # 1M statements (200k policies) on PostgreSQL: memory and start-up
#   DURATION=5s CONNS="1 64" BACKENDS=sqlite RUNS=3 scripts/bench-iam.sh
#   LOG_MODES="off default all" WRITES=0 scripts/bench-iam.sh   # the decision log side by side
#
# Environment: SIZE (default | 1m), N_USERS, N_GROUPS, N_POLICIES, N_STATEMENTS, SEED, BATCH (100),
# CONNS ("1 8 64"), DURATION (10s), RUNS (1; medians when more), BACKENDS ("sqlite postgres";
# "postgres" for SIZE=1m), LOAD (1: evaluate runs), WRITES (1: API write runs), WRITE_POLICIES
# (2000), WRITE_USERS (2000), WRITE_CONNS (8), WRITE_DURATION (20s, a cap for each write run),
# GEN_TIMEOUT (seconds, 1800), READY_TIMEOUT (seconds, 600), IAM_TEST_POSTGRES_URL (server on
# which a database is created and dropped; default postgres://postgres@127.0.0.1:5432/test),
# PORT (18090), BARE_PORT (18089), HYPER_PORT (18088), KEEP (1: keep the work directory), WORKERS (iam's
# server.workers, and the bare server's handler slots; default 16), LOG_MODES (decision log modes
# measured side by side, each on its own iam over the same database, runs interleaved: `off`,
# `default` (as shipped), `denies`, `all`, `sampled:<rate>`; default "off default"; lines go to
# a file of the work directory).
#
# wrk runs on the same machine as the server: on a 2-core box both compete for the CPUs, so read
# iam's figures against the bare server's of the same run (the ratio column), not as capacity.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

SIZE=${SIZE:-default}
case "$SIZE" in
    default) d_users=10000 d_groups=1000 d_policies=10000 d_statements=50000 d_backends="sqlite postgres" ;;
    1m) d_users=100000 d_groups=10000 d_policies=200000 d_statements=1000000 d_backends="postgres" ;;
    *) echo "SIZE must be \`default\` or \`1m\`, got \`$SIZE\`" >&2; exit 2 ;;
esac
# (GROUPS is bash's own array of group ids, hence the N_ prefix.)
USERS=${N_USERS:-$d_users}
GROUPS_N=${N_GROUPS:-$d_groups}
POLICIES=${N_POLICIES:-$d_policies}
STATEMENTS=${N_STATEMENTS:-$d_statements}
SEED=${SEED:-1}
BATCH=${BATCH:-100}
CONNS=${CONNS:-"1 8 64"}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-1}
BACKENDS=${BACKENDS:-$d_backends}
LOAD=${LOAD:-1}
WRITES=${WRITES:-1}
WRITE_POLICIES=${WRITE_POLICIES:-2000}
WRITE_USERS=${WRITE_USERS:-2000}
WRITE_CONNS=${WRITE_CONNS:-8}
WRITE_DURATION=${WRITE_DURATION:-20s}
GEN_TIMEOUT=${GEN_TIMEOUT:-1800}
READY_TIMEOUT=${READY_TIMEOUT:-600}
PG_URL=${IAM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-18090}
BARE_PORT=${BARE_PORT:-18089}
KEEP=${KEEP:-0}
WORKERS=${WORKERS:-}
LOG_MODES=${LOG_MODES:-"off default"}
TENANT=bench

dur_s=${DURATION%s}
case "$dur_s" in '' | *[!0-9]*) echo "DURATION must be whole seconds such as 10s, got $DURATION" >&2; exit 2 ;; esac

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found: installing it with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi
for tool in curl ss; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

echo "== building release binaries"
cargo build --release --bin iam --example bare_server --example bare_hyper
IAM="$ROOT/target/release/iam"
BARE="$ROOT/target/release/examples/bare_server"
HYPER="$ROOT/target/release/examples/bare_hyper"
HYPER_PORT=${HYPER_PORT:-18088}

WORK=$(mktemp -d /tmp/bench-iam.XXXXXX)
PIDS=()
PG_DB=""
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$PG_DB" ]; then
        psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wrk prints latencies as 12.34us / 1.20ms / 1.00s: convert to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.0f", n * m
    }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }
fmt_us() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%d us", u }'; }

# ---------------------------------------------------------------- wrk scripts

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
    local path = args[2] or "/api/v1/evaluate"
    for line in io.lines(args[1]) do
        if #line > 0 then
            reqs[#reqs + 1] = wrk.format("POST", path, { ["Content-Type"] = "application/json" }, line)
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

# Writes: unique names per thread, each thread stops after its share of the requests.
cat >"$WORK/write.lua" <<'LUA'
local counter = 0
function setup(thread)
    thread:set("tid", counter)
    counter = counter + 1
end
local kind, limit, tenant, run
local n, done = 0, 0
function init(args)
    kind, limit, tenant, run = args[1], tonumber(args[2]), args[3], args[4]
end
local function policy_body(name)
    local t = tenant
    local st = {
        '{"effect":"allow","actions":["epr:endpoint:read","epr:endpoint:update"],"resources":["krn:epr:' .. t .. '::endpoint/d1/t2/*"]}',
        '{"effect":"allow","actions":["cm:application:read"],"resources":["krn:cm:' .. t .. '::application/d1/t2/a7","krn:cm:' .. t .. '::application/d1/t3/a9"]}',
        '{"effect":"deny","actions":["epr:endpoint:delete"],"resources":["krn:epr:' .. t .. '::endpoint/d1/*"]}',
        '{"effect":"allow","actions":["tsdb:*"],"resources":["krn:tsdb:' .. t .. '::series/d1/t2/s3"]}',
        '{"effect":"allow","actions":["iam:user:read"],"resources":["krn:iam:' .. t .. '::user/o1/u' .. n .. '"]}',
    }
    return '{"name":"' .. name .. '","tenantID":"' .. t .. '","description":"written by bench-iam","statements":[' .. table.concat(st, ",") .. ']}'
end
function request()
    n = n + 1
    local name = string.format("w%s-%d-%d", run, tid or 0, n)
    if kind == "policies" then
        return wrk.format("POST", "/api/v1/policies", { ["Content-Type"] = "application/json" }, policy_body(name))
    end
    local body = '{"username":"' .. name .. '","tenantID":"' .. tenant .. '","email":"' .. name .. '@load.example.com","password":"load-password-1","confirmPassword":"load-password-1","enabled":true,"path":"/load-' .. run .. '"}'
    return wrk.format("POST", "/api/v1/users", { ["Content-Type"] = "application/json" }, body)
end
function response(status, headers, body)
    done = done + 1
    if done >= limit then wrk.thread:stop() end
end
LUA

# ---------------------------------------------------------------- helpers

# Received bytes per client socket towards $1: "localport bytes" lines. A sample that finds no
# socket (ss can miss them on a saturated machine) is taken again, up to three times.
socket_bytes() {
    local out
    for _ in 1 2 3; do
        out=$(socket_bytes_once "$1")
        [ -n "$out" ] && break
        sleep 0.2
    done
    [ -n "$out" ] && printf '%s\n' "$out"
    return 0
}

socket_bytes_once() {
    ss -Htni state established "( dport = :$1 )" 2>/dev/null | awk '
        /^[^ \t]/ { if (port != "") print port, bytes; n = split($3, a, ":"); port = a[n]; bytes = 0; next }
        { if (match($0, /bytes_received:[0-9]+/)) bytes = substr($0, RSTART + 15, RLENGTH - 15) }
        END { if (port != "") print port, bytes }'
}

# run_wrk OUT PORT CONNS DURATION SCRIPT PATH [script args...]: wrk plus two socket samples;
# writes wrk's output to OUT and "progressing/seen" to OUT.progress.
run_wrk() {
    local out=$1 port=$2 c=$3 d=$4 script=$5 path=$6
    shift 6
    local threads=2
    [ "$c" -lt 2 ] && threads=1
    local ds=${d%s}
    wrk -t"$threads" -c"$c" -d"$d" --timeout 5s --latency -s "$script" "http://127.0.0.1:$port$path" -- "$@" >"$out" 2>&1 &
    local wpid=$!
    local first=$(( ds >= 6 ? 2 : 1 ))
    local second=$(( ds - first - 1 ))
    [ "$second" -lt 1 ] && second=1
    sleep "$first"
    socket_bytes "$port" >"$out.s1"
    sleep "$second"
    socket_bytes "$port" >"$out.s2"
    wait "$wpid" || true
    awk 'NR == FNR { before[$1] = $2; next } { seen++; if ($2 > before[$1] + 0) moved++ } END { printf "%d/%d\n", moved, seen }' \
        "$out.s1" "$out.s2" >"$out.progress"
}

wrk_rps() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
wrk_pct() { to_us "$(awk -v p="$2" '$1 == p { print $2 }' "$1")"; }
wrk_non2xx() { awk '/Non-2xx/ { print $NF }' "$1" | head -1; }
# "connect 0, read 2, write 0, timeout 3" -> "read:2,timeout:3"; "none" when there are none.
wrk_sockerr() {
    awk -F'Socket errors: ' '/Socket errors/ { n = split($2, parts, ", "); out = ""
        for (i = 1; i <= n; i++) { split(parts[i], kv, " "); if (kv[2] + 0 > 0) out = out (out == "" ? "" : ",") kv[1] ":" kv[2] }
        print (out == "" ? "none" : out); found = 1 }
        END { if (!found) print "none" }' "$1"
}
wrk_requests() { awk '/requests in/ { print $1 }' "$1" | head -1; }
wrk_seconds() { awk '/requests in/ { v = $4; sub(/,$/, "", v); n = v + 0; if (v ~ /ms$/) n /= 1000; else if (v ~ /m$/) n *= 60; print n }' "$1" | head -1; }

wait_ready() { # PORT PID T0_MS -> prints ms from T0 to the first 200 of /health/ready
    local port=$1 pid=$2 t0=$3
    local deadline=$(( $(now_ms) + READY_TIMEOUT * 1000 ))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health/ready" || true)
        if [ "$code" = 200 ]; then echo $(( $(now_ms) - t0 )); return 0; fi
        [ "$(now_ms)" -gt "$deadline" ] && return 1
        sleep 0.01
    done
}

rss_mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Results: R[backend|workload|c] = "rps p50 p99 non2xx sockerr progress"
declare -A R
declare -A INFO
NOTES=()

# measure LABEL:PORT...: the evaluate runs against running servers, one label each; each run of
# each workload and concurrency goes through the servers in turn, so that a machine whose load
# drifts weighs on all of them alike.
measure() {
    local targets=("$@")
    for workload in single batch; do
        local file="$WORK/req.$workload.jsonl" path="/api/v1/evaluate"
        [ "$workload" = batch ] && path="/api/v1/evaluate?filterResources=true"
        for c in $CONNS; do
            declare -A rps_all=() p50_all=() p99_all=() non_sum=() req_sum=() sock=() prog=()
            for run in $(seq 1 "$RUNS"); do
                for t in "${targets[@]}"; do
                    local label=${t%:*} port=${t##*:}
                    local out="$WORK/wrk-${label// /_}-$workload-c$c-$run.txt"
                    run_wrk "$out" "$port" "$c" "$DURATION" "$WORK/evaluate.lua" "$path" "$file" "$path"
                    local rps p50 p99 n s p
                    rps=$(wrk_rps "$out"); p50=$(wrk_pct "$out" 50%); p99=$(wrk_pct "$out" 99%)
                    n=$(wrk_non2xx "$out"); s=$(wrk_sockerr "$out"); p=$(cat "$out.progress")
                    local total; total=$(wrk_requests "$out")
                    printf '  %-20s %-6s c=%-3s run %d: %8s req/s  p50 %8s  p99 %8s  non-2xx %s/%s  socket errors %s  progressing %s\n' \
                        "$label" "$workload" "$c" "$run" "${rps:-0}" "$(fmt_us "${p50:-0}")" "$(fmt_us "${p99:-0}")" \
                        "${n:-0}" "${total:-0}" "${s:-none}" "$p"
                    rps_all[$label]="${rps_all[$label]:-} ${rps:-0}"
                    p50_all[$label]="${p50_all[$label]:-} ${p50:-0}"
                    p99_all[$label]="${p99_all[$label]:-} ${p99:-0}"
                    non_sum[$label]=$(( ${non_sum[$label]:-0} + ${n:-0} ))
                    req_sum[$label]=$(( ${req_sum[$label]:-0} + ${total:-0} ))
                    [ "${s:-none}" != none ] && sock[$label]="${sock[$label]:-}${sock[$label]:+;}run$run:$s"
                    # Keep the worst run's count of connections that made progress.
                    local pr=${prog[$label]:-}
                    if [ -z "$pr" ] || [ "${p%%/*}" -lt "${pr%%/*}" ]; then prog[$label]=$p; fi
                done
            done
            for t in "${targets[@]}"; do
                local label=${t%:*}
                R["$label|$workload|$c"]="$(echo "${rps_all[$label]}" | median) $(echo "${p50_all[$label]}" | median) $(echo "${p99_all[$label]}" | median) ${non_sum[$label]}/${req_sum[$label]} ${sock[$label]:-none} ${prog[$label]}"
            done
        done
    done
}

# log_env MODE: the environment that selects a decision log mode of LOG_MODES.
log_env() {
    case "$1" in
        default) ;;
        off | denies | all) echo "KAA_IAM_DECISION_LOG_MODE=$1" ;;
        sampled:*) echo "KAA_IAM_DECISION_LOG_MODE=sampled KAA_IAM_DECISION_LOG_SAMPLE_RATE=${1#sampled:}" ;;
        *) echo "LOG_MODES: unknown mode \`$1\` (off, default, denies, all, sampled:<rate>)" >&2; exit 2 ;;
    esac
}

# log_label BACKEND MODE: the table's name of BACKEND's iam with the decision log in MODE.
log_label() {
    if [ "$(echo "$LOG_MODES" | wc -w)" -le 1 ]; then echo "$1"; else echo "$1 log=$2"; fi
}

# list_query KIND BACKEND: the list request that finds what a write run of BACKEND created.
list_query() {
    if [ "$1" = policies ]; then
        echo "/api/v1/policies?tenantID=$TENANT&name=w$2-"
    else
        echo "/api/v1/users?tenantID=$TENANT&path=/load-$2"
    fi
}
# api_list PORT QUERY EXTRA -> the JSON of one page
api_list() { curl -s --max-time 30 "http://127.0.0.1:$1$2&pageSize=1$3" || true; }
json_count() { grep -o '"count":[0-9]*' | head -1 | cut -d: -f2; }
json_created_ms() {
    local t; t=$(grep -o '"created":"[^"]*"' | head -1 | cut -d'"' -f4)
    [ -n "$t" ] && date -d "$t" +%s%3N
}

# writes BACKEND PORT: policies and users created through the API by WRITE_CONNS clients. wrk's
# own req/s cannot be used (its threads stop after their share, but it still reports over the
# whole -d), so the rate comes from the service: rows created and the span of their `created`
# timestamps (first to last, milliseconds).
writes() {
    local backend=$1 port=$2
    local cap=${WRITE_DURATION%s}
    for kind in policies users; do
        local total=$WRITE_POLICIES
        [ "$kind" = users ] && total=$WRITE_USERS
        local threads=2
        [ "$WRITE_CONNS" -lt 2 ] && threads=1
        local per_thread=$(( (total + threads - 1) / threads ))
        local out="$WORK/write-$backend-$kind.txt" q; q=$(list_query "$kind" "$backend")
        local t0; t0=$(now_ms)
        wrk -t"$threads" -c"$WRITE_CONNS" -d"$(( cap + 5 ))s" --timeout 60s --latency -s "$WORK/write.lua" \
            "http://127.0.0.1:$port/" -- "$kind" "$per_thread" "$TENANT" "$backend" >"$out" 2>&1 &
        local wpid=$!
        local n=0
        while kill -0 "$wpid" 2>/dev/null; do
            sleep 0.5
            n=$(api_list "$port" "$q" "" | json_count); n=${n:-0}
            [ "$n" -ge "$total" ] && break
            [ $(( $(now_ms) - t0 )) -ge $(( cap * 1000 )) ] && break
        done
        kill -INT "$wpid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
        local page_first page_last first last count rate
        page_first=$(api_list "$port" "$q" "&sort=created&sortOrder=asc")
        page_last=$(api_list "$port" "$q" "&sort=created&sortOrder=desc")
        count=$(echo "$page_first" | json_count); count=${count:-0}
        first=$(echo "$page_first" | json_created_ms || true)
        last=$(echo "$page_last" | json_created_ms || true)
        rate=$(awk -v n="$count" -v a="${first:-0}" -v b="${last:-0}" 'BEGIN { if (b > a && n > 1) printf "%.0f", (n - 1) * 1000 / (b - a); else print "?" }')
        local span; span=$(awk -v a="${first:-0}" -v b="${last:-0}" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
        local p50 p99 non
        p50=$(wrk_pct "$out" 50%); p99=$(wrk_pct "$out" 99%); non=$(wrk_non2xx "$out")
        INFO["$backend|write-$kind"]="$rate/s ($count created in $span s by $WRITE_CONNS clients; latency p50 $(fmt_us "${p50:-0}"), p99 $(fmt_us "${p99:-0}"); non-2xx ${non:-0}; socket errors $(wrk_sockerr "$out"))"
        echo "  $backend $kind written through the API: ${INFO["$backend|write-$kind"]}"
    done
}

# bench_backend NAME: generate, start, measure, write, stop.
bench_backend() {
    local backend=$1
    local -a env_db
    if [ "$backend" = sqlite ]; then
        env_db=(KAA_SQLITE_PATH="$WORK/iam.db")
    else
        if ! command -v psql >/dev/null 2>&1; then
            NOTES+=("postgres: skipped (psql not installed)"); echo "postgres: psql not found, skipped"; return 0
        fi
        if ! psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null 2>&1; then
            NOTES+=("postgres: skipped ($PG_URL not reachable)"); echo "postgres: $PG_URL not reachable, skipped"; return 0
        fi
        local re='^postgres(ql)?://([^:@/]+)(:([^@]*))?@([^:/?]+)(:([0-9]+))?(/.*)?$'
        if [[ ! "$PG_URL" =~ $re ]]; then
            NOTES+=("postgres: skipped (cannot read $PG_URL)"); return 0
        fi
        local pg_user=${BASH_REMATCH[2]} pg_pass=${BASH_REMATCH[4]} pg_host=${BASH_REMATCH[5]} pg_port=${BASH_REMATCH[7]:-5432}
        PG_DB="kaa_bench_$$_$(date +%s)"
        psql "$PG_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
        env_db=(KAA_POSTGRESQL_HOST="$pg_host" KAA_POSTGRESQL_PORT="$pg_port" KAA_POSTGRESQL_USERNAME="$pg_user"
            KAA_POSTGRESQL_PASSWORD="$pg_pass" KAA_POSTGRESQL_DATABASE="$PG_DB")
    fi
    printf 'server:\n  port: %s\n' "$PORT" >"$WORK/iam.yml"
    [ -n "$WORKERS" ] && printf '  workers: %s\n' "$WORKERS" >>"$WORK/iam.yml"
    local -a env_all=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" APP_CONFIG_PATH="$WORK/iam.yml" "${env_db[@]}")

    echo
    echo "== $backend: generating $USERS users, $GROUPS_N groups, $POLICIES policies, $STATEMENTS statements"
    local gen_cmd=("$IAM" generate --tenant "$TENANT" --users "$USERS" --groups "$GROUPS_N" --policies "$POLICIES"
        --statements "$STATEMENTS" --seed "$SEED" --batch "$BATCH" --requests "$WORK/req")
    local rc=0
    ( cd "$WORK" && timeout "$GEN_TIMEOUT" "${env_all[@]}" "${gen_cmd[@]}" ) >"$WORK/gen-$backend.txt" 2>"$WORK/gen-$backend.err" || rc=$?
    grep -v ' INFO ' "$WORK/gen-$backend.txt" | sed 's/^/  /'
    if [ "$rc" = 124 ]; then
        NOTES+=("$backend: generation took longer than GEN_TIMEOUT=${GEN_TIMEOUT}s: skipped")
        echo "  generation took longer than ${GEN_TIMEOUT}s: $backend skipped"; return 0
    elif [ "$rc" != 0 ]; then
        cat "$WORK/gen-$backend.err" >&2
        NOTES+=("$backend: generation failed (exit $rc): skipped"); return 0
    fi
    INFO["$backend|gen"]=$(awk '/^summary:/ { sub(/^summary: /, ""); print }' "$WORK/gen-$backend.txt")
    INFO["$backend|gen-policies"]=$(awk '$1 == "policies" && NF == 5 { print $5 }' "$WORK/gen-$backend.txt")
    INFO["single-mix"]=$(sed -n 's/^requests-single: //p' "$WORK/gen-$backend.txt")
    INFO["batch-mix"]=$(sed -n 's/^requests-batch: //p' "$WORK/gen-$backend.txt")

    echo "== $backend: starting iam"
    local t0; t0=$(now_ms)
    "${env_all[@]}" $(log_env "$(echo "$LOG_MODES" | awk '{ print $1 }')") "$IAM" \
        >"$WORK/decisions-$backend-1.log" 2>"$WORK/iam-$backend.log" &
    local pid=$!
    PIDS+=("$pid")
    local ready
    if ! ready=$(wait_ready "$PORT" "$pid" "$t0"); then
        tail -20 "$WORK/iam-$backend.log" >&2
        NOTES+=("$backend: iam did not become ready within ${READY_TIMEOUT}s: skipped")
        stop_pid "$pid"; return 0
    fi
    local rss; rss=$(rss_mib "$pid" VmRSS)
    local loaded; loaded=$(sed -n 's/.*index: \([0-9]*\) tenants loaded in \([0-9]*\) ms.*/\2/p' "$WORK/iam-$backend.log" | head -1)
    INFO["$backend|ready"]="$ready"
    INFO["$backend|index"]="${loaded:-?}"
    INFO["$backend|rss"]="$rss"
    echo "  ready in $ready ms (index loaded in ${loaded:-?} ms); VmRSS $rss MiB"

    # One more iam over the same database for each further decision log mode.
    local -a targets=("$(log_label "$backend" "$(echo "$LOG_MODES" | awk '{ print $1 }')"):$PORT")
    LABELS+=("$(log_label "$backend" "$(echo "$LOG_MODES" | awk '{ print $1 }')")")
    local -a more_pids=()
    local i=1 port
    for mode in $LOG_MODES; do
        [ "$i" = 1 ] && { i=2; continue; }
        port=$(( PORT + 10 * (i - 1) ))
        sed "s/^  port: .*/  port: $port/" "$WORK/iam.yml" >"$WORK/iam-$i.yml"
        local -a env_mode=(env -i PATH="$PATH" HOME="${HOME:-/tmp}" APP_CONFIG_PATH="$WORK/iam-$i.yml" "${env_db[@]}")
        "${env_mode[@]}" $(log_env "$mode") "$IAM" >"$WORK/decisions-$backend-$i.log" 2>"$WORK/iam-$backend-$i.log" &
        local mpid=$!
        PIDS+=("$mpid"); more_pids+=("$mpid")
        if ! wait_ready "$port" "$mpid" "$(now_ms)" >/dev/null; then
            tail -20 "$WORK/iam-$backend-$i.log" >&2
            NOTES+=("$backend: iam with decision log $mode did not become ready: not measured")
        else
            targets+=("$(log_label "$backend" "$mode"):$port")
            LABELS+=("$(log_label "$backend" "$mode")")
        fi
        i=$(( i + 1 ))
    done

    if [ "$LOAD" = 1 ]; then
        measure "${targets[@]}"
    fi
    for t in "${targets[@]}"; do
        local lines dropped
        lines=$(curl -s "http://127.0.0.1:${t##*:}/metrics" | awk '/^iam_decision_log_lines_total/ { print $NF }')
        dropped=$(curl -s "http://127.0.0.1:${t##*:}/metrics" | awk '/^iam_decision_log_dropped_total/ { print $NF }')
        INFO["${t%:*}|log"]="decision log lines written ${lines:-0}, dropped ${dropped:-0}"
    done
    for p in "${more_pids[@]+"${more_pids[@]}"}"; do stop_pid "$p"; done
    INFO["$backend|rss-after"]=$(rss_mib "$pid" VmRSS)
    if [ "$WRITES" = 1 ]; then
        writes "$backend" "$PORT"
    fi
    INFO["$backend|hwm"]=$(rss_mib "$pid" VmHWM)
    stop_pid "$pid"
    if [ "$backend" = postgres ] && [ -n "$PG_DB" ]; then
        psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
        PG_DB=""
    fi
}

# ---------------------------------------------------------------- run

echo
echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(uname -sr)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sizes: SIZE=$SIZE users=$USERS groups=$GROUPS_N policies=$POLICIES statements=$STATEMENTS seed=$SEED batch=$BATCH"
echo "runs: CONNS=\"$CONNS\" DURATION=$DURATION RUNS=$RUNS BACKENDS=\"$BACKENDS\""

DONE_BACKENDS=()
LABELS=()
for m in $LOG_MODES; do log_env "$m" >/dev/null; done
for b in $BACKENDS; do
    case "$b" in
        sqlite | postgres) bench_backend "$b" ;;
        *) echo "unknown backend $b" >&2; exit 2 ;;
    esac
    [ -n "${INFO["$b|ready"]:-}" ] && DONE_BACKENDS+=("$b")
done
if [ "$SIZE" = 1m ] && [ "${#DONE_BACKENDS[@]}" -eq 0 ] && [[ " $BACKENDS " != *" sqlite "* ]]; then
    echo "PostgreSQL did not give figures: trying SQLite for the 1M figures"
    bench_backend sqlite
    [ -n "${INFO["sqlite|ready"]:-}" ] && DONE_BACKENDS+=(sqlite)
fi

if [ "$LOAD" = 1 ] && [ -f "$WORK/req.single.jsonl" ]; then
    echo
    echo "== bare server (examples/bare_server.rs, workers=16, fixed 60-byte JSON answer) with the same request bodies"
    BENCH_WORKERS=${WORKERS:-16} "$BARE" "127.0.0.1:$BARE_PORT" >"$WORK/bare.out" 2>&1 &
    bpid=$!
    PIDS+=("$bpid")
    for _ in $(seq 1 100); do grep -q "listening on" "$WORK/bare.out" 2>/dev/null && break; sleep 0.1; done
    measure "bare:$BARE_PORT"
    stop_pid "$bpid"
    echo
    echo "== bare hyper (examples/bare_hyper.rs: hyper alone, no layer around it) with the same request bodies"
    "$HYPER" "127.0.0.1:$HYPER_PORT" >"$WORK/hyper.out" 2>&1 &
    hpid=$!
    PIDS+=("$hpid")
    for _ in $(seq 1 100); do grep -q "listening on" "$WORK/hyper.out" 2>/dev/null && break; sleep 0.1; done
    measure "hyper:$HYPER_PORT"
    stop_pid "$hpid"
fi

# ---------------------------------------------------------------- report

echo
echo "== results ($(date -u +%Y-%m-%dT%H:%M:%SZ); medians of $RUNS run(s) of $DURATION; wrk on the same machine)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| backend | workload | conc. | req/s | decisions/s | p50 | p99 | vs bare | non-2xx / requests | socket errors | conns progressing (worst run) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
for b in "${LABELS[@]+"${LABELS[@]}"}" bare hyper; do
    for workload in single batch; do
        for c in $CONNS; do
            v=${R["$b|$workload|$c"]:-}
            [ -z "$v" ] && continue
            read -r rps p50 p99 non sock prog <<<"$v"
            per=1
            [ "$workload" = batch ] && per=$BATCH
            dps=$(( rps * per ))
            ratio="-"
            if [ "$b" != bare ] && [ "$b" != hyper ]; then
                bv=${R["bare|$workload|$c"]:-}
                if [ -n "$bv" ]; then
                    brps=${bv%% *}
                    ratio=$(awk -v a="$rps" -v b="$brps" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }')
                fi
            fi
            wl="1 resource"
            [ "$workload" = batch ] && wl="$BATCH resources"
            echo "| $b | $wl | $c | $rps | $dps | $(fmt_us "$p50") | $(fmt_us "$p99") | $ratio | $non | $sock | $prog |"
        done
    done
done
if [ "$(echo "$LOG_MODES" | wc -w)" -gt 1 ]; then
    first=$(echo "$LOG_MODES" | awk '{ print $1 }')
    echo
    echo "Decision log side by side (req/s, medians; runs interleaved; ratio to log=$first):"
    echo
    echo "| backend | workload | conc. | $(for m in $LOG_MODES; do printf 'log=%s | ' "$m"; done | sed 's/ | $//') |"
    echo "|---|---|---:|$(for m in $LOG_MODES; do printf -- '---:|'; done)"
    for b in "${DONE_BACKENDS[@]+"${DONE_BACKENDS[@]}"}"; do
        for workload in single batch; do
            for c in $CONNS; do
                base=${R["$(log_label "$b" "$first")|$workload|$c"]:-}
                [ -z "$base" ] && continue
                base=${base%% *}
                row=""
                for m in $LOG_MODES; do
                    v=${R["$(log_label "$b" "$m")|$workload|$c"]:-}
                    [ -z "$v" ] && { row="$row - |"; continue; }
                    v=${v%% *}
                    row="$row $v ($(awk -v a="$v" -v b="$base" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "-" }')) |"
                done
                wl="1 resource"; [ "$workload" = batch ] && wl="$BATCH resources"
                echo "| $b | $wl | $c |$row"
            done
        done
        for m in $LOG_MODES; do echo "  $(log_label "$b" "$m"): ${INFO["$(log_label "$b" "$m")|log"]:-?}"; done
    done
fi
echo
echo "Single-resource sample mix (non-2xx there are 403 denials): ${INFO["single-mix"]:-?}"
echo "Batch sample mix (answered 200 with the allowed subset): ${INFO["batch-mix"]:-?}"
echo
for b in "${DONE_BACKENDS[@]}"; do
    echo "$b:"
    echo "  generated through the store: ${INFO["$b|gen"]:-?} (policies ${INFO["$b|gen-policies"]:-?} rows/s)"
    echo "  start to /health/ready 200: ${INFO["$b|ready"]} ms (index load ${INFO["$b|index"]} ms)"
    echo "  VmRSS once loaded: ${INFO["$b|rss"]} MiB; after the evaluate runs: ${INFO["$b|rss-after"]:-?} MiB; VmHWM at the end: ${INFO["$b|hwm"]:-?} MiB"
    [ -n "${INFO["$b|write-policies"]:-}" ] && echo "  policies written through the API: ${INFO["$b|write-policies"]}"
    [ -n "${INFO["$b|write-users"]:-}" ] && echo "  users created through the API: ${INFO["$b|write-users"]}"
done
for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
