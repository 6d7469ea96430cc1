#!/usr/bin/env bash
# Unattended device check of the torch TV-L1 backend; see benchmarks/gpu_check.py for what it prints.
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--threads N] [--size HxW] [--batch-sizes 16,64] [--epe-pairs 8]
# Python: $PYTHON, else .venv/bin/python in the checkout, else python3. Exits non-zero on any failure,
# including running past 290 s (the issue's 5-minute budget).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec timeout 290 "$PY" benchmarks/gpu_check.py "$@"
