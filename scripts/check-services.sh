#!/usr/bin/env bash
# Fail unless the test PostgreSQL (IAM_TEST_POSTGRES_URL) and NATS (IAM_TEST_NATS_URL) answer.
set -euo pipefail
pg="${IAM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
nats="${IAM_TEST_NATS_URL:-nats://127.0.0.1:4222}"

if command -v psql >/dev/null; then
  psql "$pg" -Atqc 'select 1' >/dev/null 2>&1 || { echo "PostgreSQL does not answer at $pg"; exit 1; }
else
  hp="${pg#*://}"; hp="${hp#*@}"; hp="${hp%%/*}"
  timeout 3 bash -c "exec 3<>/dev/tcp/${hp%:*}/${hp#*:}" 2>/dev/null || { echo "PostgreSQL does not answer at $pg"; exit 1; }
fi
echo "PostgreSQL answers at $pg"

hp="${nats#*://}"; hp="${hp#*@}"; hp="${hp%%/*}"
info=$(timeout 3 bash -c "exec 3<>/dev/tcp/${hp%:*}/${hp#*:}; head -c 4 <&3" 2>/dev/null || true)
[ "$info" = "INFO" ] || { echo "NATS does not answer at $nats"; exit 1; }
echo "NATS answers at $nats"
