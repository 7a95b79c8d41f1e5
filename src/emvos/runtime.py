"""Process-wide settings that make inference faster without changing its results.

The ``emvos`` command applies them before it imports PyTorch. Python users who want the same set
``THP_MEM_ALLOC_ENABLE=1`` in the environment, or call :func:`use_huge_pages` before ``import torch``.
"""

from __future__ import annotations

import os
import platform
import sys

#: PyTorch's switch for backing large CPU tensors with transparent huge pages (read once, when the
#: first CPU tensor is allocated).
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> bool:
    """Have PyTorch back CPU tensors of 2 MiB and more with transparent huge pages (Linux).

    PyTorch allocates a fresh buffer for most results, and glibc maps every large one afresh from
    the kernel and unmaps it when it is freed. The feature maps of a 480p frame are tens of MiB, so
    with 4 KiB pages each frame costs tens of thousands of page faults; with 2 MiB pages, a few
    hundred. The computation is unchanged. The shipped model, whose layers are memory-bound, gains
    most; the paper model, whose time goes to large convolutions, gains little.

    Sets ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already sets it. PyTorch reads it when it
    allocates its first CPU tensor, so this must run before ``import torch``.

    Returns:
        :func:`huge_pages_enabled`: ``False`` if PyTorch was imported first and the environment did
        not set the variable, or off Linux.
    """
    if platform.system() == "Linux" and "torch" not in sys.modules:
        os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return huge_pages_enabled()


def huge_pages_enabled() -> bool:
    """Whether the environment asks PyTorch for huge pages: Linux and ``THP_MEM_ALLOC_ENABLE=1``.

    PyTorch reads the variable once, at its first CPU tensor; set later, it has no effect.
    """
    return platform.system() == "Linux" and os.environ.get(HUGE_PAGES_ENV) == "1"
