#!/usr/bin/env bash
# The prepared GPU check: one command, no arguments, at most 8 minutes on one H100/H200, from a bare machine with
# Python 3.12 and a CUDA build of torch that reaches no package registry.
#
#   bash benchmarks/gpu_wheels.sh     # first, where a registry is reachable: wheels and the peer script into .gpu/
#   bash benchmarks/gpu_check.sh      # on the GPU machine (with .gpu/ beside the code): figures into $OUT (gpu_out/)
#
# Installs the wheels of .gpu/wheels into /tmp/site without their dependencies (the machine's own torch, numpy,
# pandas, matplotlib and pytest serve), then runs benchmarks/gpu_check.py: tests/test_cuda.py, the DreamerV1
# paper-config pixel update (eager, bf16, captured as a CUDA graph, torch.compile) beside TorchRL's, DreamerV3's
# paper-config pixel update (size200m, float32 and bf16), PlaNet's CEM,
# and a short pixel learning run. Writes $OUT/gpu_check.json and $OUT/gpu_check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
# what the wheels of .gpu/wheels do not bring: the machine must have it
python3 - <<'EOF' || exit 1
import importlib.util, sys
needed = ["torch", "numpy", "cloudpickle", "pandas", "matplotlib", "pytest", "pytest_timeout", "yaml"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_check: this machine lacks {missing} (pip names: pytest-timeout for pytest_timeout, PyYAML for yaml)")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (a CPU build, or no GPU)")
EOF
if [ -d .gpu/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
    || { echo "could not install .gpu/wheels: run benchmarks/gpu_wheels.sh where a registry is reachable"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -m benchmarks.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
