#!/usr/bin/env bash
# Runs the policy engine benchmarks (benches/decide.rs: kaa vs cedar-policy on generated tenants of
# 1k, 10k and 100k statements) and prints a table of medians read from target/criterion, followed
# by the heap / query-mix / agreement lines the bench prints.
#
# Usage: scripts/bench-policy.sh [criterion args...]   e.g. scripts/bench-policy.sh decide_single
#        scripts/bench-policy.sh --summary-only          (only re-print the table of the last run)
# Takes a few minutes on 2 cores (plus the release build). Needs python3 for the table.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
crit="$target/criterion"
log="$crit/bench-policy.log"

if [[ "${1:-}" != "--summary-only" ]]; then
    mkdir -p "$crit"
    cargo bench --bench decide -- "$@" 2>&1 | tee "$log"
fi

if ! command -v python3 >/dev/null; then
    echo "python3 not found: medians are in $crit/*/*/*/new/estimates.json" >&2
    exit 0
fi

python3 - "$crit" <<'PY'
import json, os, sys

root = sys.argv[1]
rows = []
for group in ("decide_single", "decide_batch100", "index_build"):
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        continue
    for dirpath, _, files in os.walk(gdir):
        if not dirpath.endswith(os.sep + "new") or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        median_ns = est["median"]["point_estimate"]
        elements = None
        tp = bench.get("throughput") or {}
        if "Elements" in tp:
            elements = tp["Elements"]
        rows.append((group, bench.get("function_id") or "", bench.get("value_str") or "", median_ns, elements))

def size_key(v):
    try:
        return int(v.rstrip("k")) * (1000 if v.endswith("k") else 1)
    except ValueError:
        return 0

def fmt_time(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.2f} {unit}"
    return f"{ns:.0f} ns"

def fmt_rate(r):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= div:
            return f"{r / div:.2f} {unit}/s"
    return f"{r:.1f} /s"

if not rows:
    print(f"no criterion results under {root}")
    sys.exit(0)

rows.sort(key=lambda r: (r[0], size_key(r[2]), r[1]))
print()
print("Policy engine benchmarks (criterion medians)")
hdr = f"{'group':<16} {'benchmark':<22} {'size':>5} {'median/iter':>12} {'per element':>12} {'throughput':>14}"
print(hdr)
print("-" * len(hdr))
for group, fn, size, ns, el in rows:
    per = fmt_time(ns / el) if el else ""
    rate = fmt_rate(el / (ns / 1e9)) if el else ""
    print(f"{group:<16} {fn:<22} {size:>5} {fmt_time(ns):>12} {per:>12} {rate:>14}")

# kaa vs cedar ratios on the same workload and size.
by = {(g, f, s): ns for g, f, s, ns, _ in rows}
ratios = []
for (g, f, s), ns in sorted(by.items(), key=lambda kv: (kv[0][0], size_key(kv[0][2]))):
    if f == "kaa" and (g, "cedar", s) in by:
        ratios.append(f"  {g}/{s}: cedar / kaa = {by[(g, 'cedar', s)] / ns:,.0f}x")
    if f == "kaa_decide_loop" and (g, "cedar_loop", s) in by:
        ratios.append(f"  {g}/{s}: cedar_loop / kaa_decide_loop = {by[(g, 'cedar_loop', s)] / ns:,.0f}x")
if ratios:
    print()
    print("Speed-up over cedar-policy (same policies, same queries):")
    print("\n".join(ratios))
PY

if [[ -f "$log" ]]; then
    echo
    echo "Heap, query mix and agreement (from $log):"
    grep -E '^\[(heap|queries|check|note|fixture)\]' "$log" || true
fi
