#!/usr/bin/env bash
# Install (first time) and start R1 Workbench on http://127.0.0.1:8501 with the embedded
# tiny model. Data lives in ./workbench_data (R1WB_HOME to move it, R1WB_DB_URL for another DB).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/streamlit run app.py "$@"
