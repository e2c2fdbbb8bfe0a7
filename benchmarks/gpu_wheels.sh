#!/usr/bin/env bash
# Companion of benchmarks/gpu_check.sh, run where a package registry is reachable (this machine), before the GPU
# check: downloads every wheel the check needs on the GPU machine (CPython 3.12, x86-64 Linux, its own CUDA build of
# torch kept) into .gpu/wheels (the TorchRL peer script, benchmarks/peer_torchrl_dreamer.py, travels with the code).
# .gpu/ is ignored by git; pass it to the device tool as `carry` (about 10 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/wheels
# the project's dependencies that the GPU image lacks, and TorchRL's for the peer (its README names them)
packages=(stable-baselines3==2.9.2 gymnasium==1.4.0 farama-notifications==0.0.6
          torchrl==0.14.1 tensordict==0.14.3 importlib_metadata zipp orjson pyvers hoptorch)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# the compiled wheels (tensordict, orjson) fix the GPU machine's Python version: 3.12 unless PYTHON_VERSION says
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" \
  -d .gpu/wheels "${packages[@]}"
du -sh .gpu
