#!/usr/bin/env bash
# The first GPU's smoke test, one command (about 8 minutes on one GPU, no internet): the steps and what each settles
# are in bench/gpu_smoke.py's docstring; it writes $OUT/gpu_smoke.json (a device call) or bench/results/gpu_smoke.json.
#
# Here (needs PyPI once):  bench/stage_gpu_site.sh && bash bench/gpu_smoke.sh --dry-run   # checks the staged site
# On the device:           run(carry=[".gpu_site/site-py3.12.tar.gz"], timeout_s=600, command="bash bench/gpu_smoke.sh")
# SMOKE_BUDGET (seconds, default 470) bounds the steps together; SMOKE_MODEL=FOLDER runs the pipeline on a model
# folder the device has instead of the tiny Gemma 3; SMOKE_WORK moves the work folder (default /tmp/gemma_fast_smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}  # the device's Python, for which the site is staged
site=${SMOKE_SITE:-.gpu_site/site-py$PY.tar.gz}  # SMOKE_SITE: another staged tarball (the tests use a fake one)

if [ "${1:-}" = --dry-run ]; then
  exec python3 bench/gpu_smoke.py dry-run "$site"
fi
bench/stage_gpu_site.sh --check               # the device's Python, the staged stack, every library's version
export PYTHONPATH="$PWD/.gpu_site/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 bench/gpu_smoke.py run
