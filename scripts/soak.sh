#!/usr/bin/env bash
# Soak: a release `iam` on a fresh SQLite under mixed reads, writes and decisions at about 80% of
# the throughput measured first, for SOAK_MINUTES (default 10). Prints errors, achieved rate, and
# RSS, open fds and threads of the service at the start and the end (RSS growth from the end of
# the first minute must stay below 5%; the data set stays the same size: writes replace a fixed
# set of 100 policies).
#
#   scripts/soak.sh            # 10 minutes
#   SOAK_MINUTES=2 scripts/soak.sh
#
# Needs wrk (apt-get install -y wrk) and curl. Exit status 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES="${SOAK_MINUTES:-10}"
CONNS="${SOAK_MAX_CONNECTIONS:-16}"
SOAK_CONNS="${SOAK_CONNECTIONS:-64}"
PORT="${SOAK_PORT:-18590}"
command -v wrk >/dev/null || { echo "soak: wrk is missing (apt-get install -y wrk)"; exit 1; }

cargo build --release --locked --bin iam >/dev/null 2>&1 || cargo build --release --locked --bin iam
WORK=$(mktemp -d /tmp/kaa-soak.XXXXXX)
cleanup() { [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null; wait "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

(cd "$WORK" && SERVER_PORT=$PORT KAA_SQLITE_PATH="$WORK/iam.db" exec "$OLDPWD/target/release/iam" 2>"$WORK/iam.log") &
PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$URL/health" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/health" >/dev/null || { echo "soak: iam did not start"; cat "$WORK/iam.log"; exit 1; }

id() { printf '%s' "$1" | base64 -w0 | sed 's#/#%2F#g; s#+#%2B#g; s#=#%3D#g'; }
post() { curl -sf -o /dev/null -H 'Content-Type: application/json' "$URL$1" -d "$2"; }
post /api/v1/policies '{"name":"readers","tenantID":"soak","statements":[{"effect":"allow","actions":["iam:user:read"],"resources":["krn:iam:soak::user/*"]},{"effect":"deny","actions":["iam:user:*"],"resources":["krn:iam:soak::user/org1/*"]}]}'
READERS=$(printf '%s' "krn:iam:soak::policy/readers" | base64 -w0)
post /api/v1/users "{\"username\":\"bob\",\"tenantID\":\"soak\",\"password\":\"bob-password\",\"confirmPassword\":\"bob-password\",\"policyIDs\":[\"$READERS\"]}"
for i in $(seq 0 99); do
  post /api/v1/policies "{\"name\":\"p$i\",\"tenantID\":\"soak\",\"statements\":[{\"effect\":\"allow\",\"actions\":[\"iam:user:read\"],\"resources\":[\"krn:iam:soak::user/u$i\"]}]}"
done
IDS=$(for i in $(seq 0 99); do printf '"%s",' "$(id "krn:iam:soak::policy/p$i")"; done)
USER_ID=$(id "krn:iam:soak::user/bob")

cat >"$WORK/mix.lua" <<EOF
-- 2 reads, 2 decisions, 1 write in every 5 requests; writes replace one of 100 policies.
local ids = { ${IDS%,} }
local n = 0
local pause = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
local decide = '{"principal":"krn:iam:soak::user/bob","action":"iam:user:read","resources":["krn:iam:soak::user/alice","krn:iam:soak::user/org2/carol"]}'
request = function()
  n = n + 1
  local k = n % 5
  if k == 0 then
    return wrk.format("GET", "/api/v1/policies?tenantID=soak&limit=10")
  elseif k == 1 then
    return wrk.format("GET", "/api/v1/users/${USER_ID}")
  elseif k == 2 or k == 3 then
    return wrk.format("POST", "/api/v1/evaluate", {["Content-Type"]="application/json"}, decide)
  else
    local i = math.floor(n / 5) % 100
    local body = '{"statements":[{"effect":"allow","actions":["iam:user:read"],"resources":["krn:iam:soak::user/u' .. i .. '"]}]}'
    return wrk.format("PUT", "/api/v1/policies/" .. ids[i + 1], {["Content-Type"]="application/json"}, body)
  end
end
-- wrk pauses whole milliseconds: a fractional pause alternates its two neighbours at random.
local base = math.floor(pause)
local frac = pause - base
delay = function()
  if math.random() < frac then return base + 1 end
  return base
end
EOF
# Check the mix answers what it should before measuring.
for p in "/api/v1/policies?tenantID=soak&limit=10" "/api/v1/users/$USER_ID"; do
  curl -sf -o /dev/null "$URL$p" || { echo "soak: GET $p fails"; exit 1; }
done
# An allowed decision answers 200 (a denied one 403, which would count as an error here).
curl -sf -o /dev/null -H 'Content-Type: application/json' "$URL/api/v1/evaluate" \
  -d '{"principal":"krn:iam:soak::user/bob","action":"iam:user:read","resources":["krn:iam:soak::user/alice","krn:iam:soak::user/org2/carol"]}' \
  || { echo "soak: the decision is not allowed"; exit 1; }
curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' "$URL/api/v1/policies/$(id krn:iam:soak::policy/p0)" \
  -d '{"statements":[{"effect":"allow","actions":["iam:user:read"],"resources":["krn:iam:soak::user/u0"]}]}' | grep -q 200 \
  || { echo "soak: PUT of a policy fails"; exit 1; }

proc_stat() { # rss_kib fds threads
  echo "$(awk '/^VmRSS/ {print $2}' /proc/$PID/status) $(ls /proc/$PID/fd | wc -l) $(awk '/^Threads/ {print $2}' /proc/$PID/status)"
}
rate_of() { awk '/Requests\/sec/ {print int($2)}' "$1"; }
errors_of() { # non-2xx + socket errors
  local non2xx sock
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$1"); sock=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$1")
  echo $(( ${non2xx:-0} + ${sock:-0} ))
}

echo "== soak: measuring the maximum (15 s, $CONNS connections)"
SOAK_DELAY_MS=0 wrk -t2 -c"$CONNS" -d15s -s "$WORK/mix.lua" --latency "$URL" >"$WORK/max.txt"
MAX=$(rate_of "$WORK/max.txt")
MAXERR=$(errors_of "$WORK/max.txt")
TARGET=$((MAX * 80 / 100))
# Rate control: SOAK_CONNS connections, each pausing PAUSE ms after every answer (wrk's delay()),
# so each makes one request per (PAUSE + L) ms, L being the time to an answer. Up to four 10 s
# trials measure L at the current pause and set the pause for TARGET from it (a fractional pause is
# made of whole-millisecond pauses at random, since wrk's are whole milliseconds).
PAUSE=$(( SOAK_CONNS * 1000 / TARGET ))
for _ in 1 2 3 4; do
    SOAK_DELAY_MS=$PAUSE wrk -t2 -c"$SOAK_CONNS" -d10s -s "$WORK/mix.lua" "$URL" >"$WORK/trial.txt"
    TRIAL=$(rate_of "$WORK/trial.txt")
    # L grows as the pause shrinks (queueing), so the trials repeat until one lands within 3%.
    awk -v r="$TRIAL" -v t="$TARGET" 'BEGIN { exit !(r >= t * 0.97 && r <= t * 1.03) }' && break
    PAUSE=$(awk -v p="$PAUSE" -v r="$TRIAL" -v t="$TARGET" -v c="$SOAK_CONNS" \
        'BEGIN { l = c * 1000 / r - p; x = c * 1000 / t - l; if (x < 0) x = 0; printf "%.2f", x }')
done
DELAY=$PAUSE
echo "max ${MAX} req/s (errors ${MAXERR}); soak target ${TARGET} req/s: trial ${TRIAL} req/s, then ${SOAK_CONNS} connections pausing ${DELAY} ms each"

read -r RSS0 FD0 TH0 <<<"$(proc_stat)"
echo "== soak: ${MINUTES} min; start: RSS ${RSS0} KiB, fds ${FD0}, threads ${TH0}"
: >"$WORK/samples"
(
  for m in $(seq 1 "$MINUTES"); do sleep 60; echo "minute $m: RSS $(proc_stat | awk '{print $1" KiB, fds "$2", threads "$3}')" | tee -a "$WORK/samples"; done
) &
SAMPLER=$!
SOAK_DELAY_MS=$DELAY wrk -t2 -c"$SOAK_CONNS" -d"${MINUTES}m" --timeout 10s -s "$WORK/mix.lua" --latency "$URL" >"$WORK/soak.txt"
wait $SAMPLER || true
read -r RSS1 FD1 TH1 <<<"$(proc_stat)"
RATE=$(rate_of "$WORK/soak.txt")
REQS=$(awk '/requests in/ {print $1}' "$WORK/soak.txt")
ERR=$(errors_of "$WORK/soak.txt")
GROWTH=$(awk -v a="$RSS0" -v b="$RSS1" 'BEGIN {printf "%.2f", (b - a) * 100 / a}')
# The first minute builds the steady state (a thread and buffers per connection, caches): growth
# is judged from its sample to the end.
RSSW=$(awk '/^minute 1:/ {print $4}' "$WORK/samples")
RSSW=${RSSW:-$RSS0}
GROWTH_W=$(awk -v a="$RSSW" -v b="$RSS1" 'BEGIN {printf "%.2f", (b - a) * 100 / a}')
P99=$(awk '/^ *99%/ {print $2}' "$WORK/soak.txt")
PANICS=$(grep -c -i panic "$WORK/iam.log" || true)
curl -sf "$URL/health" >/dev/null && ALIVE=yes || ALIVE=no

echo
echo "== soak summary (release iam, SQLite, ${SOAK_CONNS} connections pausing ${DELAY} ms, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-28s %s\n' "maximum measured" "${MAX} req/s" "target (80%)" "${TARGET} req/s" \
  "achieved" "${RATE} req/s over ${MINUTES} min (${REQS} requests, p99 ${P99})" \
  "errors (non-2xx + socket)" "${ERR}" "RSS idle start -> end" "${RSS0} -> ${RSS1} KiB (${GROWTH}%)" \
  "RSS after minute 1 -> end" "${RSSW} -> ${RSS1} KiB (${GROWTH_W}%, must be < 5%)" \
  "open fds start -> end" "${FD0} -> ${FD1}" "threads start -> end" "${TH0} -> ${TH1}" \
  "panics in the log" "${PANICS}" "healthy at the end" "${ALIVE}"
cat "$WORK/samples"
FAIL=0
[[ "$ERR" == 0 ]] || { echo "FAIL: ${ERR} errors"; FAIL=1; }
awk -v g="$GROWTH_W" 'BEGIN {exit !(g < 5)}' || { echo "FAIL: RSS grew ${GROWTH_W}% after the first minute"; FAIL=1; }
((FD1 <= FD0 + SOAK_CONNS)) || { echo "FAIL: fds grew ${FD0} -> ${FD1}"; FAIL=1; }
[[ "$ALIVE" == yes && "$PANICS" == 0 ]] || FAIL=1
exit $FAIL
