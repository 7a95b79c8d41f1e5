"""``emvos speed``: how fast emvos segments, how close that is to the hardware's limit, and its memory.

For the paper's network (DenseNet-121) and the shipped model (EfficientNet-Lite0), each inference
mode of :data:`MODES` is timed over a grid of objects x resolutions, one *cell* per combination:

* **model fps**: :meth:`VideoPredictor.step_many` on frames of a :class:`SyntheticVideo` generated in
  memory, in chunks of the mode's lookahead, after ``warmup`` chunks (which also absorb
  ``torch.compile`` and the capture of CUDA graphs), timed over as many frames as fill
  ``cell_seconds`` (at least ``min_frames``, at most ``max_frames``, rounded up to whole chunks);
* **end-to-end fps**: as many frames of the same scene read from an mp4 (decoded on a background
  thread) and written as PNGs (:func:`emvos.eval.benchmark.segment_sequence`: wall time from
  opening the video to the last PNG on disk, the given first frame included);
* **GFLOPs per frame** of a propagated frame, counted with :class:`FlopCounterMode` (a multiply-add
  is 2 FLOPs; BatchNorm, softmax and other element-wise work are not counted), the GFLOP/s the
  model fps implies, and its fraction of the machine's **peak**, measured in the same run as the
  best of a large matmul and a 3x3 convolution in channels-last (:func:`measure_peaks`) in the
  mode's precision;
* **peak RSS** of the cell (on Linux the kernel's high-water mark is reset before each cell;
  elsewhere it is the process's peak so far), and peak VRAM on CUDA;
* **mask agreement**: the % of pixels identical to the reference mode :data:`REFERENCE_MODE`
  (unoptimised fp32) on the end-to-end frames after the given first frame.

Once per run, also: the **video-length sweep** (the shipped model, 1 object, the sweep's smallest
resolution, fp32, end to end over 100, 1,000 and 10,000 frames of one mp4: peak RSS must stay
flat); the **official implementation** (``--official-repo``) timed on the same frames at the
smallest resolution, its seconds per propagated frame from one call over a clip minus one call over
the first frame alone (without it, reference timings measured once on a 2-core CPU are quoted, labelled as such);
and, with ``--davis-root``, **J&F** of each mode on DAVIS sequences for the models that have
trained weights. Speed does not depend on weights, so models without a checkpoint run with random
weights (their masks, and so their agreement figures, are those of an untrained network).

Without ``--modes``, the bf16 modes are left out on CPUs that run bf16 slower than fp32 (no native
bf16: the measured peaks say so, and the summary notes it). A cell costs about one warm-up frame plus
twice ``max(cell_seconds, min_frames frames)``; the 10,000-frame run is usually the longest part.

Results go to ``OUT/speed.json`` (rewritten after every cell, so an interrupted run keeps what it
measured) and ``OUT/speed.csv`` (one row per cell); ``--doc FILE`` writes a Markdown report from the
JSON, and ``--from-json`` re-renders one without running anything.

The modes and settings are in :mod:`emvos.eval.speed_settings`, the command line in :mod:`emvos.eval.speed_cli`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from emvos.errors import EmvosInputError
from emvos.eval.benchmark import peak_memory_mb, segment_sequence
from emvos.eval.davis import RESOLUTION, available_cpus, evaluate_results
from emvos.eval.official import build_official, import_official, official_forward
from emvos.eval.speed_report import write_outputs
from emvos.eval.speed_settings import DEFAULT_MODE, MODES, REFERENCE_MODE, DavisSubset, SweepSettings
from emvos.inference.predictor import SHIPPED_MODEL, VideoPredictor
from emvos.io.masks import read_label_png, write_label_png
from emvos.io.mp4 import Mp4Writer
from emvos.model.checkpoint import OFFICIAL_CONFIG, load_model
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS
from emvos.runtime import (
    HUGE_PAGES_ENV,
    KEPT_MEMORY_BYTES,
    MMAP_THRESHOLD_ENV,
    TRIM_THRESHOLD_ENV,
    freed_memory_kept,
    huge_pages_enabled,
)


def _describe_weights(checkpoint: str | Path | None) -> str:
    """How a report names a model's weights: ``random``, or the file relative to the working folder."""
    if checkpoint is None:
        return "random"
    path = Path(checkpoint).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


@dataclass(frozen=True)
class ModelSpec:
    """A network to time.

    Attributes:
        title: how tables name it (``paper (densenet121)``).
        config: its architecture, used when there is no checkpoint (random weights).
        checkpoint: trained weights (an emvos or official checkpoint); ``None``: random weights.
    """

    title: str
    config: ModelConfig | None
    checkpoint: Path | None = None

    def build(self) -> EMVOS:
        """The network: the checkpoint's, or the architecture with seeded random weights."""
        if self.checkpoint is not None:
            return load_model(self.checkpoint)
        if self.config is None:
            raise ValueError(f"{self.title}: neither a checkpoint nor an architecture")
        torch.manual_seed(0)
        return EMVOS(self.config, encoder_weights=None)


def paper_spec(checkpoint: Path | None = None) -> ModelSpec:
    """The paper's network (DenseNet-121, the official EMVOS architecture)."""
    return ModelSpec("paper (densenet121)", OFFICIAL_CONFIG, checkpoint)


def shipped_spec(checkpoint: Path | None = None) -> ModelSpec:
    """The model shipped with emvos; its architecture with random weights when no weights file is installed."""
    if checkpoint is None and SHIPPED_MODEL.is_file():
        checkpoint = SHIPPED_MODEL
    config = None
    if checkpoint is None:
        import yaml  # the emvos-lite training preset's model section (pyyaml: the train extra)

        preset = resources.files("emvos") / "configs" / "emvos-lite.yaml"
        config = ModelConfig.from_dict(yaml.safe_load(preset.read_text(encoding="utf-8"))["model"])
    return ModelSpec("shipped (efficientnet_lite0)", config, checkpoint)


# -- synthetic frames -------------------------------------------------------------------------------------


def frame_size(height: int) -> tuple[int, int]:
    """``(H, W)`` of a 16:9 frame of the given height with an even width (480 -> 854, as DAVIS)."""
    return height, 2 * round(height * 8 / 9)


class SyntheticVideo:
    """A seeded moving scene: a panning textured background and ``discs`` striped discs moving over it.

    Frames are generated on demand from their index (nothing is stored), so any length costs the
    same memory. In frame 0 the discs sit apart on a grid; disc ``i`` is object ``i + 1``.

    Args:
        size: ``(H, W)`` of the frames.
        discs: how many discs move in the scene.
        seed: seeds the texture, the colours and the motion.
    """

    def __init__(self, size: tuple[int, int], discs: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        h, w = size
        self.size = size
        self.margin = max(h, w) // 10
        big = (h + 2 * self.margin, w + 2 * self.margin)
        coarse = rng.integers(0, 256, (big[0] // 12 + 2, big[1] // 12 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((big[1], big[0]), Image.BICUBIC), np.int16)
        grain = rng.integers(-20, 21, smooth.shape, dtype=np.int16)
        self.background = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        cols = max(1, math.ceil(math.sqrt(discs * w / h)))
        rows = math.ceil(discs / cols)
        cell = min(h / rows, w / cols)
        self.centres = np.array([((i // cols + 0.5) * h / rows, (i % cols + 0.5) * w / cols) for i in range(discs)])
        self.radii = rng.uniform(0.25, 0.4, discs) * cell
        self.amplitude = 0.3 * cell
        self.speeds = rng.uniform(0.02, 0.08, (discs, 2))
        self.colours = rng.integers(0, 200, (discs, 3))

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``: ``(H, W, 3) uint8`` RGB and its ``(H, W) uint8`` disc ids (0: background)."""
        h, w = self.size
        m = self.margin
        dy = m + round(m * math.sin(index / 37))
        dx = m + round(m * math.cos(index / 53))
        image = self.background[dy:dy + h, dx:dx + w].copy()
        labels = np.zeros((h, w), np.uint8)
        for i, ((cy, cx), r) in enumerate(zip(self.centres, self.radii, strict=True)):
            cy += self.amplitude * math.sin(self.speeds[i, 0] * index + i)
            cx += self.amplitude * math.cos(self.speeds[i, 1] * index + i)
            y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            stripes = ((yy + xx) // 6 % 2 * 55).astype(np.int16) + np.zeros_like(xx, dtype=np.int16)
            image[y0:y1, x0:x1][inside] = (self.colours[i] + stripes[inside, None]).astype(np.uint8)
            labels[y0:y1, x0:x1][inside] = i + 1
        return image, labels

    def frame(self, index: int) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB of frame ``index``."""
        return self.draw(index)[0]

    def first_mask(self, objects: int) -> np.ndarray:
        """``(H, W) uint8`` ids 1..``objects`` of the first ``objects`` discs in frame 0."""
        labels = self.draw(0)[1]
        return np.where(labels <= objects, labels, 0).astype(np.uint8)


def write_video(path: Path, scene: SyntheticVideo, frames: int, fps: int = 24) -> Path:
    """Encode frames ``0..frames-1`` of ``scene`` into an mp4 (H.264 when available)."""
    with Mp4Writer(path, fps, scene.size, preset="veryfast") as video:
        for i in range(frames):
            video.write(scene.frame(i))
    return path


def write_mask(path: Path, labels: np.ndarray) -> Path:
    """Save ``(H, W) uint8`` object ids as an indexed PNG with the DAVIS palette."""
    write_label_png(path, labels)
    return path


class Workspace:
    """Scratch folder of a run: scenes, their mp4s and first-frame masks (made once each), and outputs."""

    def __init__(self, root: Path, discs: int) -> None:
        self.root = root
        self.discs = discs
        self._scenes: dict[int, SyntheticVideo] = {}
        shutil.rmtree(root, ignore_errors=True)  # a file half-written by an interrupted run must not be reused
        root.mkdir(parents=True)

    def scene(self, height: int) -> SyntheticVideo:
        """The scene at a resolution (the same for every model and mode)."""
        if height not in self._scenes:
            self._scenes[height] = SyntheticVideo(frame_size(height), self.discs)
        return self._scenes[height]

    def video(self, height: int, frames: int) -> Path:
        """An mp4 of the first ``frames`` frames of the scene."""
        path = self.root / f"scene-{height}p-{frames}.mp4"
        return path if path.is_file() else write_video(path, self.scene(height), frames)

    def mask(self, height: int, objects: int) -> Path:
        """The first-frame mask PNG of ``objects`` objects."""
        path = self.root / f"mask-{height}p-{objects}.png"
        return path if path.is_file() else write_mask(path, self.scene(height).first_mask(objects))


# -- measurements -----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """The fastest call of ``fn``, repeated for about ``seconds`` (at least once, after one untimed call)."""
    fn()
    _sync(device)
    best, start = math.inf, time.perf_counter()
    while best == math.inf or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
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
        if n >= largest or _best_seconds(lambda a=a, b=b: a @ b, device, 0.0) >= 0.05:
            return 2 * n**3 / _best_seconds(lambda a=a, b=b: a @ b, device, seconds) / 1e9
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


def _glibc_trim() -> Callable[[], object] | None:
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


def cell_memory(device: torch.device) -> dict[str, float]:
    """Peak RSS since :func:`reset_peak_rss` (Linux; elsewhere the process's peak), and peak VRAM, in MiB."""
    memory = peak_memory_mb(device)
    if _PROC_STATUS.is_file():
        match = re.search(r"VmHWM:\s+(\d+) kB", _PROC_STATUS.read_text())
        if match:
            memory["peak_rss_mb"] = int(match.group(1)) / 1024
    return memory


def _reset_vram(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


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
        _sync(predictor.device)
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


def time_official(model: torch.nn.Module, scene: SyntheticVideo, objects: int, settings: SweepSettings,
                  device: torch.device) -> dict[str, float]:
    """Seconds per propagated frame of the official model: one call over 1 + N frames minus one over frame 0.

    A 1-frame and a 2-frame call warm it up first; the 2-frame call sets N as :func:`time_model` does.
    Also counts the FLOPs of a propagated frame (2-frame call minus 1-frame call).
    """
    h, w = scene.size
    clip = torch.empty(1, 1 + settings.max_frames, 3, h, w, device=device)
    for i in range(clip.shape[1]):
        clip[0, i] = torch.from_numpy(scene.frame(i)).to(device).permute(2, 0, 1).float() / 255
    mask = torch.from_numpy(scene.first_mask(objects).astype(np.int64)).to(device)[None, None]

    def seconds(length: int) -> float:
        t0 = time.perf_counter()
        official_forward(model, clip[:, :length], mask)
        _sync(device)
        return time.perf_counter() - t0

    seconds(1)
    estimate = seconds(2) - seconds(1)
    wanted = math.ceil(settings.cell_seconds / estimate) if estimate > 0 else settings.max_frames
    frames = min(max(wanted, settings.min_frames), settings.max_frames)
    first = seconds(1)
    per_frame = (seconds(1 + frames) - first) / frames
    with FlopCounterMode(display=False) as one:
        official_forward(model, clip[:, :1], mask)
    with FlopCounterMode(display=False) as two:
        official_forward(model, clip[:, :2], mask)
    return {"objects": objects, "frames": frames, "seconds_per_frame": per_frame, "fps": 1 / per_frame,
            "gflops_per_frame": (two.get_total_flops() - one.get_total_flops()) / 1e9}


def time_official_isolated(repo: Path, height: int, objects: Sequence[int], settings: SweepSettings,
                           device: torch.device, tuned: bool) -> list[dict[str, float]]:
    """:func:`time_official` for each object count, in a fresh Python process, as it runs by itself or tuned.

    PyTorch reads its huge-page switch (:data:`emvos.runtime.HUGE_PAGES_ENV`) and glibc its allocation
    thresholds once per process, so the official implementation is timed in a process of its own:
    as it runs by itself (PyTorch's and glibc's defaults), or ``tuned`` with the process settings
    the ``emvos`` command uses (huge pages, freed memory kept). The scene is the run's (same seed).

    Raises:
        RuntimeError: the child process failed (its last line of error output).
    """
    job = {"repo": str(repo), "height": height, "objects": list(objects), "settings": asdict(settings),
           "device": str(device), "threads": torch.get_num_threads()}
    env = {k: v for k, v in os.environ.items() if k not in (MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV)}
    env[HUGE_PAGES_ENV] = "1" if tuned else "0"
    if tuned:
        env[MMAP_THRESHOLD_ENV] = env[TRIM_THRESHOLD_ENV] = str(KEPT_MEMORY_BYTES)
    child = subprocess.run([sys.executable, "-c", "from emvos.eval.speed import official_child; official_child()"],
                           input=json.dumps(job), env=env, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError((child.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(child.stdout.strip().splitlines()[-1])


def official_child() -> None:
    """Body of :func:`time_official_isolated`'s child: read the job (JSON) on stdin, print the timings (JSON)."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job["threads"])
    settings = SweepSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["settings"].items()})
    device = torch.device(job["device"])
    model = build_official(import_official(job["repo"])).to(device)
    scene = SyntheticVideo(frame_size(job["height"]), max(job["objects"]))
    print(json.dumps([time_official(model, scene, o, settings, device) for o in job["objects"]]))


# -- the run ----------------------------------------------------------------------------------------------


def modes_for(device: torch.device, requested: Sequence[str] | None) -> list[str]:
    """The modes to run on ``device`` (all it offers when ``requested`` is ``None``), in :data:`MODES` order."""
    if requested is None:
        return [name for name, mode in MODES.items() if device.type == "cuda" or not mode.cuda_only]
    unknown = [m for m in requested if m not in MODES]
    if unknown:
        raise EmvosInputError(f"--modes: unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    if device.type != "cuda" and any(MODES[m].cuda_only for m in requested):
        needs = next(m for m in requested if MODES[m].cuda_only)
        raise EmvosInputError(f"--modes: {needs} needs a CUDA device; on the CPU use fp32, bf16 or compile")
    return [name for name in MODES if name in requested]


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


class SpeedRun:
    """One ``emvos speed`` run: measures in order and keeps the JSON summary up to date in ``out``.

    Args:
        settings: the sweep.
        models: the networks to time, by key (``paper`` is the one compared with the official code;
            the video-length sweep uses ``shipped``, else the first).
        device: where to run.
        out: output folder (``speed.json``, ``speed.csv``, scratch files while running).
        command: the command line recorded in the summary.
        official_repo: a checkout of the official EMVOS code to time side by side.
        davis: DAVIS sequences to score each mode on (models with trained weights only).
        log: progress lines (``None``: silent).
    """

    def __init__(self, settings: SweepSettings, models: dict[str, ModelSpec], device: torch.device, out: Path,
                 command: str, official_repo: Path | None = None, davis: DavisSubset | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.models = models
        self.device = device
        self.out = out
        self.official_repo = official_repo
        if official_repo is not None and "paper" not in models:
            raise EmvosInputError("--official-repo compares with the paper model; add paper to --models")
        if official_repo is not None:
            import_official(official_repo)  # a wrong checkout fails now, in one line, not after the sweep
        self.davis = davis
        self._log = log
        self.modes = modes_for(device, settings.modes)
        self.start = time.perf_counter()
        self.summary: dict[str, object] = {
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device),
            "settings": {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
                         "modes": self.modes, "reference_mode": REFERENCE_MODE, "default_mode": DEFAULT_MODE},
            "models": {},
            "peak": {},
            "flops": [],
            "cells": [],
            "official": None,
            "lengths": None,
            "davis": None,
            "notes": [],
            "elapsed_s": 0.0,
        }

    def log(self, text: str) -> None:
        """Pass a progress line, prefixed with the minutes since the run started, to the run's logger."""
        if self._log is not None:
            minutes = (time.perf_counter() - self.start) / 60
            self._log(f"[{minutes:6.1f} min] {text}")

    def note(self, text: str) -> None:
        """Add a remark to the summary (and the log)."""
        self.summary["notes"].append(text)  # type: ignore[union-attr]
        self.log(text)

    @contextlib.contextmanager
    def survive(self, what: str) -> Iterator[None]:
        """Run a part of a long sweep; should it fail (``torch.compile`` without a compiler...), note it, go on."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - one failed mode must not cost the hours of the others
            first_line = (str(exc).splitlines() or [""])[0]
            self.note(f"{what} failed and was skipped: {type(exc).__name__}: {first_line}")

    def save(self) -> None:
        """Write ``speed.json`` and ``speed.csv`` as they stand."""
        self.summary["elapsed_s"] = time.perf_counter() - self.start
        write_outputs(self.summary, self.out)

    def run(self) -> dict[str, object]:
        """Measure everything, then remove the scratch folder; returns the summary."""
        self.workspace = Workspace(self.out / "work", max(self.settings.objects))
        self.log(f"peak throughput of {self.device} ...")
        peak = measure_peaks(self.device, 0.2 if self.settings.small_kernels else 2.0, self.settings.small_kernels)
        self.summary["peak"] = peak
        if self.settings.modes is None and self.device.type == "cpu" and peak["bf16"] < peak["fp32"]:
            slow = [m for m in self.modes if MODES[m].precision == "bf16"]
            self.modes = [m for m in self.modes if m not in slow]
            self.summary["settings"]["modes"] = self.modes  # type: ignore[index]
            self.note(f"this CPU runs bf16 at {peak['bf16']:.3g} GFLOP/s against {peak['fp32']:.3g} in fp32 (no native "
                      f"bf16), so {', '.join(slow)} were skipped; --modes runs them anyway")
        self.save()
        length_model = "shipped" if "shipped" in self.models else next(iter(self.models))
        for key, spec in self.models.items():
            network = spec.build()
            self.summary["models"][key] = {  # type: ignore[index]
                "title": spec.title,
                "config": network.config.to_dict(),
                "weights": _describe_weights(spec.checkpoint),
                "parameters": sum(p.numel() for p in network.parameters()),
            }
            if spec.checkpoint is None:
                self.note(f"{key}: random weights (speed does not depend on them; masks do)")
            self.sweep(key, network)
            if key == length_model and self.settings.lengths:
                self.length_sweep(key, network)
            if self.davis is not None:
                self.score_davis(key, spec, network)
            del network
        if self.official_repo is not None:
            with self.survive("the official implementation"):
                self.time_official_code(self.official_repo)
        shutil.rmtree(self.workspace.root, ignore_errors=True)
        self.save()
        return self.summary

    def sweep(self, key: str, network: EMVOS) -> None:
        """FLOPs, then every mode over the objects x resolutions grid."""
        s = self.settings
        flops: dict[tuple[int, int], FlopCount] = {}
        for height in s.resolutions:
            for objects in s.objects:
                count = count_flops(network, self.device, self.workspace.scene(height), objects, height)
                flops[height, objects] = count
                self.summary["flops"].append({  # type: ignore[union-attr]
                    "model": key, "resolution": height, "objects": objects,
                    "gflops_first_frame": count.first / 1e9, "gflops_per_frame": count.frame / 1e9,
                    "encoder_gflops": count.encoder / 1e9, "decoder_gflops": count.decoder / 1e9,
                    "other_gflops": (count.frame - count.encoder - count.decoder) / 1e9,
                })
                self.log(f"{key} {height}p {objects} object(s): {count.frame / 1e9:.1f} GFLOPs per frame")
        self.save()
        outputs = self.workspace.root / "cells" / key
        for mode_name in self.modes:
            with self.survive(f"{key}: mode {mode_name}"):
                self.sweep_mode(key, network, mode_name, flops, outputs)
        shutil.rmtree(outputs, ignore_errors=True)

    def sweep_mode(self, key: str, network: EMVOS, mode_name: str, flops: dict[tuple[int, int], FlopCount],
                   outputs: Path) -> None:
        """Every cell of one mode; the end-to-end PNGs go to ``outputs/<mode>/<cell>``.

        Compiled and graphed modes get one more warm-up chunk: the first frames of a new shape recompile,
        and the first propagated frame of a video captures its graph.
        """
        s = self.settings
        mode = MODES[mode_name]
        cell_settings = replace(s, warmup=s.warmup + 1) if mode.compile or mode.graphs else s
        predictor = VideoPredictor(network, device=self.device, resolution=s.resolutions[0],
                                   precision=mode.precision, optimize=mode.optimize, compile=mode.compile,
                                   cuda_graphs=mode.graphs, lookahead=mode.lookahead)
        for height in s.resolutions:
            predictor.resolution = height
            for objects in s.objects:
                cell_dir = outputs / mode_name / f"{height}p-{objects}"
                row = self.run_cell(predictor, height, objects, cell_dir, cell_settings)
                count = flops[height, objects]
                achieved = count.frame * row["frames"] / row["model_seconds"] / 1e9
                peak = self.summary["peak"][mode.precision]  # type: ignore[index]
                agreement, compared = (mask_agreement(outputs / REFERENCE_MODE / cell_dir.name, cell_dir)
                                       if mode_name != REFERENCE_MODE else (None, 0))
                row.update(model=key, mode=mode_name, gflops_per_frame=count.frame / 1e9, gflops_per_s=achieved,
                           peak_fraction=achieved / peak, agreement=agreement, agreement_frames=compared)
                self.summary["cells"].append(row)  # type: ignore[union-attr]
                self.log(f"{key} {mode_name:<12} {height}p {objects} obj: model {row['model_fps']:.2f} fps, "
                         f"end to end {row['end_to_end_fps']:.2f} fps, {100 * row['peak_fraction']:.0f} % of "
                         f"peak, {row['peak_rss_mb']:.0f} MiB")
                self.save()

    def run_cell(self, predictor: VideoPredictor, height: int, objects: int, cell_dir: Path,
                 s: SweepSettings) -> dict[str, float]:
        """Model-only then end-to-end timing of one cell, with its peak memory."""
        video = self.workspace.video(height, 1 + s.max_frames)
        mask = self.workspace.mask(height, objects)
        reset_peak_rss()
        _reset_vram(self.device)
        model = time_model(predictor, self.workspace.scene(height), objects, s)
        e2e = segment_sequence(predictor, video, mask, cell_dir, max_frames=1 + model.frames)
        return {"resolution": height, "objects": objects, "frames": model.frames, "model_seconds": model.seconds,
                "model_fps": model.frames / model.seconds, "end_to_end_frames": e2e.frames,
                "end_to_end_seconds": e2e.total_seconds, "end_to_end_fps": e2e.frames / e2e.total_seconds,
                **cell_memory(self.device)}

    def length_sweep(self, key: str, network: EMVOS) -> None:
        """End to end over videos of every length (fp32, 1 object, the smallest resolution): peak RSS of each."""
        s = self.settings
        height = min(s.resolutions)
        lengths = sorted(s.lengths)
        self.log(f"video-length sweep: writing a {lengths[-1]}-frame {height}p video ...")
        video = self.workspace.video(height, lengths[-1])
        mask = self.workspace.mask(height, 1)
        predictor = VideoPredictor(network, device=self.device, resolution=height)
        out = self.workspace.root / "lengths"
        segment_sequence(predictor, video, mask, out / "warmup", max_frames=s.warmup + 1)
        rows = []
        for length in lengths:
            reset_peak_rss()
            _reset_vram(self.device)
            timing = segment_sequence(predictor, video, mask, out / str(length), max_frames=length)
            rows.append({"frames": timing.frames, "model_fps": timing.frames / timing.model_seconds,
                         "end_to_end_fps": timing.frames / timing.total_seconds, **cell_memory(self.device)})
            shutil.rmtree(out / str(length), ignore_errors=True)
            self.log(f"{key} {length} frames: end to end {rows[-1]['end_to_end_fps']:.2f} fps, "
                     f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MiB")
        self.summary["lengths"] = {"model": key, "resolution": height, "objects": 1, "mode": DEFAULT_MODE, "rows": rows,
                                   "rss_ratio": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]}
        self.save()

    def score_davis(self, key: str, spec: ModelSpec, network: EMVOS) -> None:
        """J&F of every mode on the DAVIS sequences, for a model with trained weights."""
        davis = self.davis
        if self.summary["davis"] is None:
            self.summary["davis"] = {"root": str(davis.root), "year": davis.year, "split": davis.split,
                                     "sequences": list(davis.sequences), "rows": []}
        if spec.checkpoint is None:
            self.note(f"{key}: no J&F (random weights)")
            return
        for mode_name in self.modes:
            with self.survive(f"{key}: J&F of mode {mode_name}"):
                self.score_mode(key, network, mode_name)

    def score_mode(self, key: str, network: EMVOS, mode_name: str) -> None:
        """Segment the DAVIS sequences in one mode and score them."""
        davis = self.davis
        mode = MODES[mode_name]
        predictor = VideoPredictor(network, device=self.device, precision=mode.precision, optimize=mode.optimize,
                                   compile=mode.compile, cuda_graphs=mode.graphs, lookahead=mode.lookahead)
        results = self.workspace.root / "davis" / key / mode_name
        frames = seconds = 0.0
        for name in davis.sequences:
            timing = segment_sequence(predictor, davis.root / "JPEGImages" / RESOLUTION / name,
                                      davis.root / "Annotations" / RESOLUTION / name / "00000.png", results / name)
            frames += timing.frames
            seconds += timing.model_seconds
        result = evaluate_results(results, davis.root, year=davis.year, split=davis.split,
                                  sequences=list(davis.sequences))
        row = {"model": key, "mode": mode_name, "frames": int(frames), "model_fps": frames / seconds,
               **result.global_row()}
        self.summary["davis"]["rows"].append(row)  # type: ignore[index]
        self.log(f"{key} {mode_name}: J&F {100 * row['J&F-Mean']:.2f} on {len(davis.sequences)} sequence(s)")
        self.save()

    def time_official_code(self, repo: Path) -> None:
        """The official implementation (checkout ``repo``) on the same scenes, at the smallest resolution, each
        timing in its own process: as it runs by itself (the speed-ups use it), then, when this run has them,
        with the same process settings as emvos (huge pages, freed memory kept)."""
        height = min(self.settings.resolutions)
        rows = time_official_isolated(repo, height, self.settings.objects, self.settings, self.device, tuned=False)
        for row in rows:
            self.log(f"official {height}p {row['objects']} obj: {row['seconds_per_frame']:.3f} s per frame")
        self.summary["official"] = {"source": f"this run: {repo}", "resolution": height,
                                    "seconds_per_frame": {r["objects"]: r["seconds_per_frame"] for r in rows},
                                    "rows": rows}
        if huge_pages_enabled() or freed_memory_kept():
            tuned = time_official_isolated(repo, height, self.settings.objects, self.settings, self.device,
                                           tuned=True)
            for row in tuned:
                self.log(f"official {height}p {row['objects']} obj, emvos's process settings: "
                         f"{row['seconds_per_frame']:.3f} s")
            self.summary["official"]["tuned_seconds_per_frame"] = {  # type: ignore[index]
                r["objects"]: r["seconds_per_frame"] for r in tuned}
        self.save()
