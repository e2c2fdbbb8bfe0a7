"""Huge pages for PyTorch's large CPU tensors: on by default at import, and the user's choice is kept."""

import os
import pathlib
import subprocess
import sys

import pytest

from sb3_rssm.common.memory import transparent_huge_pages_mode

# a fresh interpreter: PyTorch reads the variable once, at its first allocation
PROBE = """
import os
import sb3_rssm
import torch

def huge_kib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages"):
            return int(line.split()[1])

x = torch.ones(64 * 2**20 // 4)
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kib())
"""


def run_probe(value):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    variable, huge_kib = out.split()
    return variable, int(huge_kib)


@pytest.mark.skipif(not pathlib.Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc needed")
def test_import_enables_huge_pages_for_large_tensors_and_keeps_the_users_choice():
    mode = transparent_huge_pages_mode()
    if mode not in ("madvise", "always"):
        pytest.skip(f"transparent huge pages are {mode!r} on this machine")
    variable, huge_kib = run_probe(None)
    assert variable == "1"
    # the 64 MiB tensor sits (mostly) in 2 MiB pages
    assert huge_kib >= 32 * 1024
    variable, huge_kib = run_probe("0")
    assert variable == "0"
    if mode == "madvise":
        # opted out: PyTorch does not ask, and in madvise mode the kernel then gives none
        assert huge_kib < 32 * 1024
