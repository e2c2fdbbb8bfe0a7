"""
Process-wide memory setting for training on CPU: transparent huge pages for PyTorch's large tensors.

A pixel Dreamer update allocates gigabytes of fresh activations (the first conv layer's output alone is
300 MB for a batch of 50 x 50 frames). The C library serves each from new memory, and every 4 KiB page of
it is zero-filled by the kernel on first touch: a quarter of a second per GB on the project's CPU
machines. With ``THP_MEM_ALLOC_ENABLE=1``, PyTorch asks the kernel (``madvise``) for 2 MiB pages for
buffers of 2 MiB and more, which cuts those faults 512-fold: the float32 pixel update takes 8.6 s with it
and 9.5 s without on the project's AMD EPYC machine (docs/benchmarks.md, one harness run).
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional

#: the environment variable PyTorch's CPU allocator reads (once, at its first allocation)
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
#: where Linux says whether transparent huge pages are used always, on request (madvise) or never
THP_MODE_FILE = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


def enable_huge_pages() -> None:
    """
    Set ``THP_MEM_ALLOC_ENABLE=1`` unless it is set: a value the user chose (``0`` opts out) is kept.

    PyTorch reads the variable at its first CPU tensor allocation, so this takes effect only when
    ``sb3_rssm`` is imported before any tensor is created (importing torch creates none); a script that
    makes tensors first should export the variable itself. It is a hint on Linux with transparent huge
    pages in ``madvise`` or ``always`` mode, and ignored elsewhere.
    """
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")


def transparent_huge_pages_mode() -> Optional[str]:
    """The kernel's transparent-huge-pages mode (``always``, ``madvise`` or ``never``), None where unknown."""
    try:
        text = THP_MODE_FILE.read_text()
        return text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        return None
