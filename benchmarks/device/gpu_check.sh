#!/usr/bin/env bash
# The device check (benchmarks/device/gpu_check.py says what it prints), on the GPU machine's Python as it is:
# torch, numpy and plain OpenCV, no PyAV, no network. Installs this checkout --no-deps into a temporary
# folder together with the PyAV wheel that `make device-bundle` put in device_bundle/ (carried to the
# device), puts that folder first on PYTHONPATH, and runs gpu_check.py against the installed package
# (as a file, not with -m: -m would put the checkout first on sys.path and test it instead).
#   benchmarks/device/gpu_check.sh [--device cuda|cpu] [--threads N] [--size HxW] [--batch-sizes 16,64] [--epe-pairs 8]
# $PYTHON: the interpreter (default python3); $BUNDLE: the wheel folder (default device_bundle). Needs pip
# and setuptools in that Python (torch depends on setuptools). Exits non-zero on any failure, including
# running past 290 s in all (the issue's 5-minute budget).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
BUNDLE="${BUNDLE:-device_bundle}"
shopt -s nullglob
wheels=("$BUNDLE"/av-*.whl)
if (( ${#wheels[@]} != 1 )); then
  echo "gpu_check.sh: expected exactly one av-*.whl in $BUNDLE/, found ${#wheels[@]}; run 'make device-bundle'" \
       "on the build machine and carry $BUNDLE to this machine" >&2
  exit 2
fi
TARGET="$(mktemp -d)"
trap 'rm -rf "$TARGET"' EXIT
start=$SECONDS
"$PY" -m pip install --quiet --no-deps --no-index --no-build-isolation --disable-pip-version-check \
  --target "$TARGET" . "${wheels[0]}"
echo "installed refineloc-e2e (--no-deps) and ${wheels[0]##*/} into $TARGET in $((SECONDS - start)) s"
export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
exec timeout $((290 - (SECONDS - start))) "$PY" benchmarks/device/gpu_check.py "$@"
