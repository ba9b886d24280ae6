#!/usr/bin/env bash
# Install everything Tickwire needs on a fresh Debian machine; safe to run again.
# Python venv in .venv (every process's extras, with the test and bench ones), Java + Maven + the Kafka jars, PostgreSQL.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || apt_install python3 python3-venv
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is needed ($PY is $("$PY" -V 2>&1))"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    say "creating the virtualenv .venv"
    "$PY" -m venv "$ROOT/.venv" 2>>"$LOGS/setup.log" || { apt_install python3-venv; "$PY" -m venv "$ROOT/.venv"; }
fi
STAMP="$ROOT/.venv/.tickwire-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    say "installing Python packages into .venv (log: $LOGS/pip.log)"
    "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip >"$LOGS/pip.log" 2>&1
    "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[all,test,bench]" >>"$LOGS/pip.log" 2>&1 || die "pip install failed, see $LOGS/pip.log"
    touch "$STAMP"
fi
bash "$ROOT/deploy/local/kafka.sh" install
bash "$ROOT/deploy/local/postgres.sh" install
