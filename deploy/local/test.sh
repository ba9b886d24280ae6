#!/usr/bin/env bash
# The whole test suite against a real local Kafka and PostgreSQL that this script starts
# (own ports and data under var/test, so a running demo is not disturbed) and stops.
# Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bash "$ROOT/deploy/local/setup.sh"
# promtool checks the Prometheus config and rules (tests/deploy); Debian ships it in "prometheus".
command -v promtool >/dev/null || apt_install --no-install-recommends prometheus

export TICKWIRE_VAR_DIR="${TICKWIRE_TEST_VAR_DIR:-$ROOT/var/test}"
export TICKWIRE_LOCAL_KAFKA_PORT="${TICKWIRE_TEST_KAFKA_PORT:-29092}"
export TICKWIRE_LOCAL_KAFKA_CONTROLLER_PORT="${TICKWIRE_TEST_KAFKA_CONTROLLER_PORT:-$((TICKWIRE_LOCAL_KAFKA_PORT + 1))}"
export TICKWIRE_LOCAL_KAFKA_SASL_PORT="${TICKWIRE_TEST_KAFKA_SASL_PORT:-$((TICKWIRE_LOCAL_KAFKA_PORT + 2))}"
export TICKWIRE_LOCAL_PG_PORT="${TICKWIRE_TEST_PG_PORT:-25432}"
export TICKWIRE_KAFKA_BOOTSTRAP="127.0.0.1:$TICKWIRE_LOCAL_KAFKA_PORT"
export TICKWIRE_PG_DSN="postgresql://tickwire@127.0.0.1:$TICKWIRE_LOCAL_PG_PORT/tickwire"
export TICKWIRE_PG_PASSWORD_FILE="$TICKWIRE_VAR_DIR/pg/password"
export TICKWIRE_REQUIRE_SERVICES=1

PYTEST_PID=""
cleanup() {
    # Everything pytest started runs in its process group: end it, then the services.
    [ -n "$PYTEST_PID" ] && kill -TERM -- "-$PYTEST_PID" 2>/dev/null && sleep 2 && kill -KILL -- "-$PYTEST_PID" 2>/dev/null
    bash "$ROOT/deploy/local/kafka.sh" stop || true
    bash "$ROOT/deploy/local/postgres.sh" stop || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A broker left from an interrupted run may hold stale test topics: start clean.
bash "$ROOT/deploy/local/kafka.sh" stop
rm -rf "$TICKWIRE_VAR_DIR/kafka/data"
bash "$ROOT/deploy/local/kafka.sh" start
bash "$ROOT/deploy/local/postgres.sh" start

cd "$ROOT"
set +e
setsid "$ROOT/.venv/bin/python" -m pytest -ra "$@" &
PYTEST_PID=$!
wait "$PYTEST_PID"
status=$?
[ "$status" -eq 5 ] && { say "pytest collected no tests"; status=1; }
exit "$status"
