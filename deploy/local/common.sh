# Shared paths and helpers for deploy/local scripts; sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="${TICKWIRE_VAR_DIR:-$ROOT/var}"
LOGS="$VAR/log"
mkdir -p "$LOGS"

KAFKA_PORT="${TICKWIRE_LOCAL_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${TICKWIRE_LOCAL_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_SASL_PORT="${TICKWIRE_LOCAL_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
PG_PORT="${TICKWIRE_LOCAL_PG_PORT:-15432}"

say() { printf '[tickwire] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# wait_port PORT SECONDS: until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
    local port="$1" deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=""
apt_install() {
    [ -n "$APT_UPDATED" ] || { as_root apt-get update -qq -o DPkg::Lock::Timeout=600 >"$LOGS/apt.log" 2>&1; APT_UPDATED=1; }
    say "installing $* from Debian's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$@" >>"$LOGS/apt.log" 2>&1 \
        || die "apt-get install $* failed, see $LOGS/apt.log"
}
