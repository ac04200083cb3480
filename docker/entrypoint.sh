#!/usr/bin/env bash
# Entry point of the ttt-infer image: checks that the results volume is writable by this user, then
# runs the given command (by default `nox -s bench`; docker-compose.yml names one per service).
set -euo pipefail

results="${TTT_INFER_RESULTS:-/opt/ttt-infer/results}"
mkdir -p "${results}" 2>/dev/null || true
if [[ ! -w "${results}" ]]; then
    echo "ttt-entrypoint: ${results} is not writable by uid $(id -u)." >&2
    echo "  Build the image for your user: TTT_UID=\$(id -u) TTT_GID=\$(id -g) docker compose build" >&2
    exit 70
fi

if [[ $# -eq 0 ]]; then
    set -- nox -s bench
fi
exec "$@"
