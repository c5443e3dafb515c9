#!/usr/bin/env bash
# Runs the real-client tests (kafka-python, confluent-kafka and KafkaJS against a real switchyard
# broker, once per backend compiled into the binary, and a kcat smoke test). Creates or reuses a
# venv and a KafkaJS install, installs the pinned requirements and lockfile only when they
# changed, then runs pytest. Extra arguments go to pytest.
#
#   SWITCHYARD_VENV  venv to use (default ~/.cache/switchyard-venv)
#   SWITCHYARD_BIN   broker binary (default $CARGO_TARGET_DIR/debug/switchyard, else
#                    ~/.cache/switchyard-target/debug/switchyard); build it first with
#                    `cargo build -p switchyard --all-targets`
#   PYTHON           interpreter that creates the venv (default python3, 3.11 or newer)
#   SWITCHYARD_KAFKAJS_DIR  where KafkaJS is installed (default ~/.cache/switchyard-kafkajs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/venv.sh"

# KafkaJS, from the pinned lockfile, into a directory outside the clone; again only when the
# lockfile changed.
kafkajs="${SWITCHYARD_KAFKAJS_DIR:-$HOME/.cache/switchyard-kafkajs}"
lock="$repo/compat-tests/kafkajs/package-lock.json"
js_stamp="$kafkajs/.switchyard-lock.sha256"
js_want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ "$(cat "$js_stamp" 2>/dev/null || true)" != "$js_want" ] || [ ! -d "$kafkajs/node_modules/kafkajs" ]; then
    echo "installing KafkaJS from $lock into $kafkajs" >&2
    mkdir -p "$kafkajs"
    cp "$repo/compat-tests/kafkajs/package.json" "$lock" "$kafkajs/"
    (cd "$kafkajs" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$js_want" >"$js_stamp"
fi
export SWITCHYARD_KAFKAJS_MODULES="$kafkajs/node_modules"

cd "$repo"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest compat-tests/clients -q -p no:cacheprovider "$@"
