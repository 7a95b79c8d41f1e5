"""Process-wide settings that make inference faster without changing its results: the one place
where emvos changes state that outlives a call.

The ``emvos`` command applies them before it imports PyTorch. Python users who want the same call
:func:`use_huge_pages` before ``import torch`` and :func:`keep_freed_memory` (or set the environment
variables they name before Python starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

#: PyTorch's switch for backing large CPU tensors with transparent huge pages (read once, when the
#: first CPU tensor is allocated).
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
#: glibc's size above which an allocation gets pages of its own from the kernel, and the free memory
#: at the top of the heap above which it hands memory back; each read when a process starts.
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
TRIM_THRESHOLD_ENV = "MALLOC_TRIM_THRESHOLD_"
#: The value :func:`keep_freed_memory` gives both: larger than any feature map of a 1080p frame.
KEPT_MEMORY_BYTES = 1 << 30
# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


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


def keep_freed_memory() -> bool:
    """Have glibc reuse freed memory for large tensors instead of mapping fresh pages each time (Linux).

    By default glibc gives every allocation above a threshold (at most 32 MiB) pages of its own and
    returns them to the kernel when the tensor is freed; the next frame's tensor of the same size
    then gets new pages, which the kernel must zero on first touch. At 480p the early feature maps
    are tens of MiB, so every frame paid about 1,600 page faults and the zeroing of each page. With
    both thresholds at :data:`KEPT_MEMORY_BYTES`, tensors come from the heap, and after the first
    frames every allocation reuses memory that is already mapped: no page faults per frame. The
    computation is unchanged; memory freed by the process is kept for it until it exits, so the
    resident size stays at its peak.

    Applies to this process (``mallopt``) and, through the environment, to the processes it starts.
    A threshold the environment already sets is left alone (glibc read it when the process started).

    Returns:
        :func:`freed_memory_kept`.
    """
    if platform.system() != "Linux" or MMAP_THRESHOLD_ENV in os.environ or TRIM_THRESHOLD_ENV in os.environ:
        return freed_memory_kept()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, KEPT_MEMORY_BYTES) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_MEMORY_BYTES) == 1)
    except (OSError, AttributeError):  # not glibc: no mallopt
        ok = False
    if ok:
        os.environ[MMAP_THRESHOLD_ENV] = os.environ[TRIM_THRESHOLD_ENV] = str(KEPT_MEMORY_BYTES)
    return freed_memory_kept()


def freed_memory_kept() -> bool:
    """Whether both glibc thresholds are set, in the environment, to at least :data:`KEPT_MEMORY_BYTES`."""
    values = [os.environ.get(name, "") for name in (MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV)]
    return platform.system() == "Linux" and all(v.isdigit() and int(v) >= KEPT_MEMORY_BYTES for v in values)


def use_cudnn_autotuning() -> None:
    """Let cuDNN time its convolution algorithms for each new input shape and keep the fastest.

    A video's frames share one shape, so the timing is paid once, on the first frame; the results
    are those of the default algorithms up to float rounding. No effect without CUDA. Imports
    PyTorch: the ``emvos`` command calls it once a subcommand needs PyTorch.
    """
    import torch

    torch.backends.cudnn.benchmark = True


def allow_compiled_shapes(count: int) -> None:
    """Let ``torch.compile`` keep up to ``count`` compiled versions of a function (process-wide).

    Each input shape (for a video: resolution x object count) is compiled separately; past
    Dynamo's limit (8 by default) a function silently runs uncompiled. Never lowers the limit.
    :class:`emvos.inference.VideoPredictor` calls it when asked to compile. Imports PyTorch.
    """
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, count)
