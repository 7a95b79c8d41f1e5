"""What ``emvos speed`` runs: the inference modes it times, the sweep's settings and the DAVIS sequences
it scores; plain values, so that the command's options are parsed without PyTorch (:mod:`emvos.eval.speed`
runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mode:
    """An inference mode: the :class:`~emvos.inference.VideoPredictor` options it sets.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        optimize: BatchNorm folding and channels-last on a copy of the network.
        compile: ``torch.compile`` the encoder and decoder.
        graphs: replay each frame from a CUDA graph (CUDA only).
        lookahead: frames encoded together (:meth:`~emvos.inference.VideoPredictor.step_many`).
    """

    precision: str
    optimize: bool = True
    compile: bool = False
    graphs: bool = False
    lookahead: int = 1

    @property
    def cuda_only(self) -> bool:
        """Only offered on CUDA devices: fp16 and CUDA graphs."""
        return self.precision == "fp16" or self.graphs


#: Frames the ``+lookahead`` modes encode together.
LOOKAHEAD_FRAMES = 8
#: Every mode, in the order they run and are listed.
MODES: dict[str, Mode] = {
    "fp32-unopt": Mode("fp32", optimize=False),
    "fp32": Mode("fp32"),
    "bf16": Mode("bf16"),
    "compile": Mode("fp32", compile=True),
    "bf16+compile": Mode("bf16", compile=True),
    "fp16": Mode("fp16"),
    "fp16+compile": Mode("fp16", compile=True),
    "graph": Mode("fp32", graphs=True),
    "bf16+graph": Mode("bf16", graphs=True),
    "fp16+graph": Mode("fp16", graphs=True),
    "graph+lookahead": Mode("fp32", graphs=True, lookahead=LOOKAHEAD_FRAMES),
    "fp16+graph+lookahead": Mode("fp16", graphs=True, lookahead=LOOKAHEAD_FRAMES),
}
#: The mode every other mode's masks are compared with: the plain fp32 network.
REFERENCE_MODE = "fp32-unopt"
#: What ``emvos segment`` runs without options.
DEFAULT_MODE = "fp32"


@dataclass(frozen=True)
class SweepSettings:
    """What ``emvos speed`` runs.

    Attributes:
        modes: modes to time (keys of :data:`MODES`); ``None``: every mode the device offers.
        objects: object counts of the grid.
        resolutions: frame heights of the grid (frames are 16:9, e.g. 854x480).
        lengths: frames of each run of the video-length sweep.
        warmup: propagated frames run before timing a cell.
        cell_seconds: model time each cell aims for (its frame count follows from the last warm-up frame).
        min_frames: fewest timed frames per cell.
        max_frames: most timed frames per cell.
        small_kernels: time small peak kernels (smoke runs) instead of full-size ones.
    """

    modes: tuple[str, ...] | None = None
    objects: tuple[int, ...] = (1, 3, 7)
    resolutions: tuple[int, ...] = (480, 720, 1080)
    lengths: tuple[int, ...] = (100, 1000, 10000)
    warmup: int = 1
    cell_seconds: float = 5.0
    min_frames: int = 2
    max_frames: int = 50
    small_kernels: bool = False


#: ``--quick``: a smoke run of every part at tiny sizes (seconds, not hours).
QUICK = SweepSettings(modes=("fp32-unopt", "fp32", "bf16"), objects=(1, 2), resolutions=(64, 96), lengths=(4, 8),
                      warmup=1, cell_seconds=0.0, min_frames=2, max_frames=2, small_kernels=True)


@dataclass(frozen=True)
class DavisSubset:
    """DAVIS sequences to score every mode on."""

    root: Path
    year: int
    split: str
    sequences: tuple[str, ...]
