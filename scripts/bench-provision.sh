#!/usr/bin/env bash
# Tenants provisioned per second and seconds from POST to AVAILABLE, against the Keycloak
# stand-in and, when it runs, the real Keycloak (scripts/dev-services.sh), side by side; then the
# real Keycloak taken to KC_REALMS realms (default 200) in steps of TENANTS: after each step its
# resident memory, the step's tenants per second and POST-to-AVAILABLE times, and one tenant
# made alone (nothing queued before it). Every tenant the run made on the real server is
# deleted at the end, so the server is left as it was.
#
#   scripts/bench-provision.sh                  # 50 tenants per run, workers 2 and 4, 200 realms
#   TENANTS=20 WORKERS="2" KC_REALMS=100 scripts/bench-provision.sh
#   KC_ONLY=1 scripts/bench-provision.sh        # only the real Keycloak's realm steps
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${TENANTS:-50}
WORKERS=${WORKERS:-"2 4"}
export KC_REALMS=${KC_REALMS:-200}
if [ -z "${IAM_TEST_KEYCLOAK_URL:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    eval "$(scripts/dev-services.sh)"
fi
# shellcheck disable=SC2086
cargo run --release --example tm_provision_bench -- "$TENANTS" $WORKERS
