#!/usr/bin/env bash
# Start the three servers the tests need, on a Debian machine where none runs (as root):
#   PostgreSQL 15 on 127.0.0.1:5432 (trust, database `test`, user `postgres`),
#   nats-server with JetStream on 127.0.0.1:4222,
#   Keycloak (org.keycloak:keycloak-quarkus-dist from Maven Central) in dev mode on
#   127.0.0.1:${KAA_DEV_KEYCLOAK_PORT:-8180}, bootstrap admin `admin`/`admin`.
# Idempotent: what is missing is installed, what already answers is left alone. Progress goes to
# stderr; stdout carries only `export NAME=value` lines, so `eval "$(scripts/dev-services.sh)"`
# sets the variables the tests read.
#
#   scripts/dev-services.sh          install what is missing, start what does not answer
#   scripts/dev-services.sh --stop   stop what this script started (by the PIDs it recorded)
#
# Data (PostgreSQL cluster, JetStream store, logs, PIDs) lives under ${KAA_DEV_DIR:-/tmp/kaa-dev};
# the Keycloak download and its unpacked distribution under ${KAA_CACHE_DIR:-/var/cache/kaa-dev},
# outside the repository. Keycloak's dev-mode database is emptied at each start: a test server.
set -euo pipefail

KC_VERSION=26.5.6 # pinned; Maven Central serves 26.4.0 to 26.7.3
dir="${KAA_DEV_DIR:-/tmp/kaa-dev}"
cache="${KAA_CACHE_DIR:-/var/cache/kaa-dev}"
kc_port="${KAA_DEV_KEYCLOAK_PORT:-8180}"
kc_mgmt_port="${KAA_DEV_KEYCLOAK_MANAGEMENT_PORT:-9180}"
kc_admin=admin
kc_password=admin
mkdir -p "$dir" "$cache"

say() { echo "dev-services: $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_pid() { # name: stop the process whose PID this script recorded, if it still runs
  local f="$dir/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

if [ "${1:-}" = "--stop" ]; then
  stop_pid keycloak
  stop_pid nats
  stop_pid postgres
  exit 0
fi

apt_updated=0
apt_install() { # packages...
  if [ $apt_updated = 0 ]; then apt-get update -qq >&2; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

command -v curl >/dev/null || apt_install curl
command -v nats-server >/dev/null || apt_install nats-server
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")

# --- NATS with JetStream
if answers 4222; then
  say "NATS already answers on 127.0.0.1:4222"
else
  nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir/nats" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/nats.pid"
  disown
  for _ in $(seq 1 50); do answers 4222 && break; sleep 0.1; done
  answers 4222 || { say "nats-server did not start, see $dir/nats.log"; exit 1; }
  say "started NATS (pid $(cat "$dir/nats.pid"))"
fi

# --- PostgreSQL 15 (it refuses to run as root: the postgres user, a socket dir it owns)
if answers 5432; then
  say "PostgreSQL already answers on 127.0.0.1:5432"
else
  id postgres >/dev/null 2>&1 || useradd -r -m postgres
  install -d -m 0700 -o postgres "$dir/pg"
  install -d -o postgres "$dir/pgsock"
  touch "$dir/pg.log" && chown postgres "$dir/pg.log"
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    runuser -u postgres -- "$pgbin/initdb" -D "$dir/pg" -A trust -U postgres >/dev/null
  fi
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" \
    -o "-k $dir/pgsock -h 127.0.0.1 -p 5432 -c max_connections=300" -w start >/dev/null
  head -n1 "$dir/pg/postmaster.pid" >"$dir/postgres.pid"
  say "started PostgreSQL (pid $(cat "$dir/postgres.pid"))"
fi
runuser -u postgres -- psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname='test'" \
  | grep -q 1 || runuser -u postgres -- createdb -h 127.0.0.1 -U postgres test

# --- Keycloak
kc_home="$cache/keycloak/keycloak-$KC_VERSION"
if answers "$kc_port"; then
  say "Keycloak already answers on 127.0.0.1:$kc_port"
else
  java=""
  if command -v java >/dev/null; then java=$(command -v java); fi
  if [ -z "$java" ]; then
    for j in /usr/lib/jvm/*/bin/java; do [ -x "$j" ] && java="$j"; done
  fi
  if [ -z "$java" ]; then apt_install openjdk-17-jre-headless; java=$(command -v java); fi
  if [ ! -x "$kc_home/bin/kc.sh" ]; then
    command -v mvn >/dev/null || apt_install maven
    command -v unzip >/dev/null || apt_install unzip
    zip="$cache/keycloak-quarkus-dist-$KC_VERSION.zip"
    if [ ! -f "$zip" ]; then
      say "fetching org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip with Maven"
      mvn -q -B dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip" \
        -DoutputDirectory="$cache" >&2
    fi
    rm -rf "$cache/keycloak.tmp"
    mkdir -p "$cache/keycloak.tmp"
    unzip -q "$zip" -d "$cache/keycloak.tmp"
    mkdir -p "$cache/keycloak"
    rm -rf "$kc_home"
    mv "$cache/keycloak.tmp/keycloak-$KC_VERSION" "$kc_home"
    rm -rf "$cache/keycloak.tmp"
  fi
  rm -rf "$kc_home/data/h2" # a clean server at every start
  say "starting Keycloak $KC_VERSION on 127.0.0.1:$kc_port (tens of seconds)"
  (
    export JAVA_HOME
    JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$java")")")
    export KC_BOOTSTRAP_ADMIN_USERNAME=$kc_admin KC_BOOTSTRAP_ADMIN_PASSWORD=$kc_password
    exec "$kc_home/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$kc_port" \
      --health-enabled=true --http-management-port="$kc_mgmt_port"
  ) </dev/null >"$dir/keycloak.log" 2>&1 &
  echo $! >"$dir/keycloak.pid"
  disown
  ready=0
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$kc_mgmt_port/health/ready" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$(cat "$dir/keycloak.pid")" 2>/dev/null || break
    sleep 1
  done
  if [ $ready = 0 ]; then
    say "Keycloak did not become ready; last lines of $dir/keycloak.log:"
    tail -n 20 "$dir/keycloak.log" >&2
    exit 1
  fi
  say "started Keycloak (pid $(cat "$dir/keycloak.pid"))"
fi

echo "export IAM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test"
echo "export IAM_TEST_NATS_URL=nats://127.0.0.1:4222"
echo "export IAM_TEST_KEYCLOAK_URL=http://127.0.0.1:$kc_port"
echo "export IAM_TEST_KEYCLOAK_ADMIN_USERNAME=$kc_admin"
echo "export IAM_TEST_KEYCLOAK_ADMIN_PASSWORD=$kc_password"
