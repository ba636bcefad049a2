#!/usr/bin/env bash
# Start a throwaway PostgreSQL 15 and NATS (JetStream) for development on a machine without them
# (Debian; run as root). Data lives under ${KAA_DEV_DIR:-/tmp/kaa-dev}. Prints the test URLs.
set -euo pipefail
dir="${KAA_DEV_DIR:-/tmp/kaa-dev}"
mkdir -p "$dir"

if ! command -v nats-server >/dev/null; then apt-get update -qq && apt-get install -y -qq nats-server; fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt-get update -qq && apt-get install -y -qq postgresql; fi
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")

if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir/nats" -l "$dir/nats.log" &
  disown
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  # PostgreSQL refuses to run as root: use the postgres user and a socket dir it owns.
  id postgres >/dev/null 2>&1 || useradd -r -m postgres
  install -d -o postgres "$dir/pg" "$dir/pgsock"
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    runuser -u postgres -- "$pgbin/initdb" -D "$dir/pg" -A trust -U postgres >/dev/null
  fi
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" \
    -o "-k $dir/pgsock -h 127.0.0.1 -p 5432" -w start >/dev/null
  runuser -u postgres -- psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname='test'" \
    | grep -q 1 || runuser -u postgres -- createdb -h 127.0.0.1 -U postgres test
fi

echo "export IAM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test"
echo "export IAM_TEST_NATS_URL=nats://127.0.0.1:4222"
