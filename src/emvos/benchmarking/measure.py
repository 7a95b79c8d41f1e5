"""The measurements of one cell, and the machine they ran on.

Model time (:func:`time_model`), the FLOPs of a frame (:func:`count_flops`), the machine's measured
peak (:func:`measure_peaks`), the agreement of two runs' masks (:func:`mask_agreement`), and what the
machine is (:func:`machine_info`).
"""

from __future__ import annotations

import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from emvos.benchmarking.scenes import SyntheticVideo
from emvos.benchmarking.settings import SweepSettings
from emvos.eval.davis import available_cpus
from emvos.inference.predictor import VideoPredictor
from emvos.io.masks import read_label_png
from emvos.model.network import EMVOS
from emvos.runtime import freed_memory_kept, huge_pages_enabled


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA); a no-op on the CPU, whose calls return when done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """The fastest call of ``fn``, repeated for about ``seconds`` (at least once, after one untimed call)."""
    fn()
    synchronize(device)
    best, start = math.inf, time.perf_counter()
    while best == math.inf or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _matmul_gflops(device: torch.device, dtype: torch.dtype, largest: int, seconds: float) -> float:
    """GFLOP/s of ``(n, n) @ (n, n)``; ``n`` doubles from 256 up to ``largest`` while a product takes < 50 ms.

    A precision the hardware does not accelerate (bf16 on a CPU without native bf16 runs at a few
    GFLOP/s) is thus measured on a small product instead of one that takes minutes.
    """
    n = 256
    while True:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

        def product(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
            return a @ b

        if n >= largest or _best_seconds(product, device, 0.0) >= 0.05:
            return 2 * n**3 / _best_seconds(product, device, seconds) / 1e9
        n *= 2


def measure_peaks(device: torch.device, seconds: float = 1.0, small: bool = False) -> dict[str, float]:
    """The machine's measured peak GFLOP/s: a large matmul and a 3x3 convolution per precision.

    Kernels: ``(n, n) @ (n, n)`` in the precision's dtype (``n`` up to 2048 on CPUs, 8192 on GPUs; see
    :func:`_matmul_gflops`) and a 3x3, 256 -> 256 channel convolution on a channels-last
    ``(B, 256, 120, 216)`` map (the paper decoder's stride-4 convolution at 480p; ``B`` = 1 on CPUs,
    16 on GPUs) under autocast. Each is timed as its fastest call over ``seconds``. ``small`` shrinks
    both for smoke runs.

    Returns:
        GFLOP/s keyed ``matmul-<p>`` and ``conv3x3-<p>`` for each precision ``p`` (``fp32``, ``bf16``,
        and ``fp16`` on CUDA), and ``<p>``: the better of the two, the peak a mode in ``p`` is held to.
    """
    cuda = device.type == "cuda"
    largest = 256 if small else 8192 if cuda else 2048
    batch, channels, hw = (1, 32, (32, 32)) if small else (16 if cuda else 1, 256, (120, 216))
    peaks: dict[str, float] = {}
    for precision in ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16"):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peaks[f"matmul-{precision}"] = _matmul_gflops(device, dtype, largest, seconds)
        x = torch.randn(batch, channels, *hw, device=device).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, channels, 3, 3, device=device).contiguous(memory_format=torch.channels_last)

        def conv(x: torch.Tensor = x, weight: torch.Tensor = weight, dtype: torch.dtype = dtype) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return F.conv2d(x, weight, padding=1)

        conv_flops = 2 * batch * channels * channels * 9 * hw[0] * hw[1]
        peaks[f"conv3x3-{precision}"] = conv_flops / _best_seconds(conv, device, seconds) / 1e9
        peaks[precision] = max(peaks[f"matmul-{precision}"], peaks[f"conv3x3-{precision}"])
    return peaks


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one video's frames (:class:`FlopCounterMode`: matmuls and convolutions, 2 per multiply-add).

    Attributes:
        first: the first frame, given with its mask (encoding only).
        frame: a propagated frame.
        encoder: of ``frame``, in the encoder.
        decoder: of ``frame``, in the decoder's per-object part, all objects together (everything else
            is object-independent or matching: keys, the decoder's shared part, matching).
    """

    first: int
    frame: int
    encoder: int
    decoder: int


def count_flops(network: EMVOS, device: torch.device, scene: SyntheticVideo, objects: int,
                resolution: int) -> FlopCount:
    """Count the FLOPs of the first and the second frame of ``scene`` with ``objects`` objects."""
    predictor = VideoPredictor(network, device=device, resolution=resolution, optimize=False)
    state = predictor.init_state()
    with FlopCounterMode(display=False) as first:
        predictor.step(state, scene.frame(0), scene.first_mask(objects))
    with FlopCounterMode(display=False) as frame:
        predictor.step(state, scene.frame(1))
    by_module = frame.get_flop_counts()
    return FlopCount(
        first.get_total_flops(), frame.get_total_flops(),
        sum(by_module.get(type(network.encoder).__name__, {}).values()),
        sum(by_module.get(type(network.decoder).__name__, {}).values()),
    )


@dataclass(frozen=True)
class ModelTiming:
    """Timed propagated frames of one cell (after the warm-up)."""

    frames: int
    seconds: float


def time_model(predictor: VideoPredictor, scene: SyntheticVideo, objects: int, settings: SweepSettings) -> ModelTiming:
    """Time :meth:`VideoPredictor.step_many` on in-memory frames; frame generation is not timed.

    Frame 0 gets the mask of ``objects`` objects; the frames that follow go in chunks of the
    predictor's ``lookahead`` (1: frame by frame). ``settings.warmup`` chunks run untimed, and the
    last of them sets how many frames fill ``settings.cell_seconds``.
    """
    state = predictor.init_state()
    predictor.step(state, scene.frame(0), scene.first_mask(objects))
    chunk = predictor.lookahead

    def run_chunk() -> float:
        images = [scene.frame(state.next_index + i) for i in range(chunk)]
        t0 = time.perf_counter()
        predictor.step_many(state, images)
        synchronize(predictor.device)
        return time.perf_counter() - t0

    last = math.inf
    for _ in range(settings.warmup):
        last = run_chunk() / chunk
    wanted = math.ceil(settings.cell_seconds / last) if last > 0 else settings.max_frames
    chunks = math.ceil(min(max(wanted, settings.min_frames), settings.max_frames) / chunk)
    return ModelTiming(chunks * chunk, sum(run_chunk() for _ in range(chunks)))


def mask_agreement(reference: Path, other: Path) -> tuple[float | None, int]:
    """% of pixels identical in the PNGs two runs wrote, over the frames both have after the first."""
    names = sorted({p.name for p in reference.glob("*.png")} & {p.name for p in other.glob("*.png")})[1:]
    if not names:
        return None, 0
    same = total = 0
    for name in names:
        a, b = read_label_png(reference / name).labels, read_label_png(other / name).labels
        same += int((a == b).sum())
        total += a.size
    return 100 * same / total, len(names)


def machine_info(device: torch.device) -> dict[str, object]:
    """The CPU, cores, threads, PyTorch and device the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "available_cpus": available_cpus(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "huge_pages": huge_pages_enabled(),
        "freed_memory_kept": freed_memory_kept(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return info
