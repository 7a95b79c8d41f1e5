"""Peak memory of one measurement: the kernel's peak-RSS mark reset before it (Linux), peak VRAM on CUDA.

On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark ``VmHWM`` of
``/proc/self/status`` to the current RSS, after glibc's ``malloc_trim`` (through ``ctypes``) has
handed back what it can; elsewhere the figures are the process's peak so far.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
from collections.abc import Callable
from pathlib import Path

import torch

from emvos.eval.benchmark import peak_memory_mb


def _glibc_trim() -> Callable[[int], object] | None:
    """glibc's ``malloc_trim``, or ``None`` without glibc."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


_MALLOC_TRIM = _glibc_trim()
_PROC_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Free what can be freed and reset the kernel's peak-RSS mark to the current RSS (Linux; else a no-op)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def reset_peak_vram(device: torch.device) -> None:
    """Reset PyTorch's peak of CUDA memory allocated on ``device`` (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cell_memory(device: torch.device) -> dict[str, float]:
    """Peak RSS since :func:`reset_peak_rss` (Linux; elsewhere the process's peak), and peak VRAM, in MiB."""
    memory = peak_memory_mb(device)
    if _PROC_STATUS.is_file():
        match = re.search(r"VmHWM:\s+(\d+) kB", _PROC_STATUS.read_text())
        if match:
            memory["peak_rss_mb"] = int(match.group(1)) / 1024
    return memory
