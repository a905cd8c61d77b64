#!/bin/sh
# Runs the seed stack (FastAPI + aiosqlite, benches/seed/app.py) for `scale --seed-url`.
#   pip install -r benches/seed/requirements.txt
#   benches/seed/run.sh [PORT] [DATABASE]      # default 8090 and a new file in /tmp
# WORKERS (default 1, as the original plan ran it) sets uvicorn's worker processes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
port=${1:-8090}
db=${2:-$(mktemp -d)/seed.db}
echo "seed stack on http://127.0.0.1:$port/api/v1/connections (database $db)" >&2
cd "$here"
SEED_DB="$db" exec python3 -m uvicorn app:app --host 127.0.0.1 --port "$port" \
    --workers "${WORKERS:-1}" --no-access-log --log-level warning
