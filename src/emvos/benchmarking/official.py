"""The official EMVOS implementation timed on ``emvos speed``'s scenes, each timing in a process of its own.

PyTorch reads its huge-page switch and glibc its allocation thresholds once per process, so
:func:`time_official_isolated` runs :func:`official_child` in a fresh Python process (the job as
JSON on stdin, the timings as JSON on stdout), with the environment of the settings it is to be
timed under. The checkout is imported by :mod:`emvos.eval.official`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from emvos.benchmarking.measure import synchronize
from emvos.benchmarking.scenes import SyntheticVideo, frame_size
from emvos.benchmarking.settings import SweepSettings
from emvos.eval.official import build_official, import_official, official_forward
from emvos.runtime import HUGE_PAGES_ENV, KEPT_MEMORY_BYTES, MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV

#: What the child process runs.
_CHILD = "from emvos.benchmarking.official import official_child; official_child()"


def time_official(model: torch.nn.Module, scene: SyntheticVideo, objects: int, settings: SweepSettings,
                  device: torch.device) -> dict[str, float]:
    """Seconds per propagated frame of the official model: one call over 1 + N frames minus one over frame 0.

    A 1-frame and a 2-frame call warm it up first; the 2-frame call sets N as
    :func:`~emvos.benchmarking.measure.time_model` does. Also counts the FLOPs of a propagated frame
    (2-frame call minus 1-frame call).
    """
    h, w = scene.size
    clip = torch.empty(1, 1 + settings.max_frames, 3, h, w, device=device)
    for i in range(clip.shape[1]):
        clip[0, i] = torch.from_numpy(scene.frame(i)).to(device).permute(2, 0, 1).float() / 255
    mask = torch.from_numpy(scene.first_mask(objects).astype(np.int64)).to(device)[None, None]

    def seconds(length: int) -> float:
        t0 = time.perf_counter()
        official_forward(model, clip[:, :length], mask)
        synchronize(device)
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
    child = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(job), env=env, capture_output=True,
                           text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError((child.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(child.stdout.strip().splitlines()[-1])


def official_child() -> None:
    """Body of :func:`time_official_isolated`'s child: read the job (JSON) on stdin, print the timings (JSON)."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job["threads"])
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in job["settings"].items()}
    settings = SweepSettings(**fields)
    device = torch.device(job["device"])
    model = build_official(import_official(job["repo"])).to(device)
    scene = SyntheticVideo(frame_size(job["height"]), max(job["objects"]))
    print(json.dumps([time_official(model, scene, o, settings, device) for o in job["objects"]]))
