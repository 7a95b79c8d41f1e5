"""What ``emvos speed`` runs: the inference modes, the sweep's settings, the networks and DAVIS sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from emvos.errors import EmvosInputError
from emvos.inference.settings import SHIPPED_MODEL
from emvos.model.config import ModelConfig

if TYPE_CHECKING:  # the command line parses without PyTorch; these load when a sweep runs
    import torch

    from emvos.model.network import EMVOS


def describe_weights(checkpoint: str | Path | None) -> str:
    """How a report names a model's weights: ``random``, or the file relative to the working folder."""
    if checkpoint is None:
        return "random"
    path = Path(checkpoint).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


@dataclass(frozen=True)
class Mode:
    """An inference mode: the :class:`VideoPredictor` options it sets.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        optimize: BatchNorm folding and channels-last on a copy of the network.
        compile: ``torch.compile`` the encoder and decoder.
        graphs: replay each frame from a CUDA graph (CUDA only).
        lookahead: frames encoded together (:meth:`VideoPredictor.step_many`).
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
        import torch

        from emvos.model.checkpoint import load_model
        from emvos.model.network import EMVOS

        if self.checkpoint is not None:
            return load_model(self.checkpoint)
        if self.config is None:
            raise ValueError(f"{self.title}: neither a checkpoint nor an architecture")
        torch.manual_seed(0)
        return EMVOS(self.config, encoder_weights=None)


def paper_spec(checkpoint: Path | None = None) -> ModelSpec:
    """The paper's network (DenseNet-121, the official EMVOS architecture)."""
    from emvos.model.checkpoint import OFFICIAL_CONFIG

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


@dataclass(frozen=True)
class DavisSubset:
    """DAVIS sequences to score every mode on."""

    root: Path
    year: int
    split: str
    sequences: tuple[str, ...]


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
