#!/usr/bin/env bash
# Install (first time) and run the whole test suite, slow tests included.
# Browser tests need Debian's chromium; as root it is installed here if missing.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
