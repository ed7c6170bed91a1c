#!/usr/bin/env bash
# The device suite in one unattended call on a lent GPU machine (see benchmarks/device_suite.py
# and docs/gpu.md). On the development machine, first: `.venv/bin/python -m benchmarks.device_wheels`
# (fills the ignored .whl/ with the wheels the device lacks and a copy of the shared photos), then
# send this script with `.whl` carried. Options: --budget-s N (default 540, installs included),
# --out DIR (default $OUT, else out/device_suite), --dry-run (the same steps on a CPU, tiny sizes;
# installs nothing from .whl: the running Python must have what the project needs).
set -euo pipefail
started_at=$(date +%s)
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
# what the image's python3 lacks (torch and the rest are there); the last six are sam2 and what it imports
REQUIRED=(pycocotools segment_anything sam2 hydra_core omegaconf antlr4_python3_runtime iopath portalocker)

dry_run=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=1; done

site=$(mktemp -d /tmp/sa_engine_site.XXXXXX)
if [ "$dry_run" = 0 ]; then
  missing=()
  for name in "${REQUIRED[@]}"; do
    compgen -G "$WHEELS/${name}-*.whl" >/dev/null || missing+=("$name")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[device_suite] error: no wheel for ${missing[*]} in $WHEELS/: run '.venv/bin/python -m benchmarks.device_wheels' on the development machine and carry .whl" >&2
    exit 3
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
fi
# The project itself, without its dependencies: a check that it installs offline. The suite then
# runs from this checkout, which also holds parity/ (test support, not in the wheel).
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site/project" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
photos=()
compgen -G "$WHEELS/photos/*.jpg" >/dev/null && photos=(--photos "$WHEELS/photos/*.jpg")
exec "$PYTHON" -m benchmarks.device_suite --started-at "$started_at" "${photos[@]}" "$@"
