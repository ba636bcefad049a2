#!/usr/bin/env bash
# Fail unless the test PostgreSQL (IAM_TEST_POSTGRES_URL), NATS (IAM_TEST_NATS_URL) and, when
# IAM_TEST_KEYCLOAK_URL is set, Keycloak answer.
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

kc="${IAM_TEST_KEYCLOAK_URL:-}"
if [ -n "$kc" ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' "$kc/realms/master/.well-known/openid-configuration" || true)
  [ "$code" = 200 ] || { echo "Keycloak does not answer at $kc (HTTP $code)"; exit 1; }
  echo "Keycloak answers at $kc"
fi
