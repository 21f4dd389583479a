#!/usr/bin/env bash
# Install (first time) and run the whole test suite, slow tests included.
# Browser tests need Debian's chromium; as root it is installed here if missing.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
# --- PostgreSQL (tests/test_postgres.py starts and stops its own throwaway server from these
# binaries; they fail under CI without them). As root, Debian's package is installed if missing.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# --- end PostgreSQL
exec .venv/bin/python -m pytest "$@"
