#!/usr/bin/env bash
# The embedded default: install what is missing, then `tickwire run` (Ctrl-C or `tickwire stop` to end).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bash "$ROOT/deploy/local/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/tickwire" run "$@"
