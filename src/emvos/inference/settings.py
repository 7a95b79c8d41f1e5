"""Inference settings that the command line and :class:`~emvos.inference.VideoPredictor` share.

Free of PyTorch, so that ``emvos segment --help`` and the checks of its inputs answer at once.
"""

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from emvos.errors import EmvosInputError

#: Default working resolution (shorter side), as in the paper's protocol (DAVIS 480p).
DEFAULT_RESOLUTION = 480
#: ``precision`` choices: float32, or autocast to bfloat16 / float16.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Default test-time adaptation steps (``--adapt``; :class:`~emvos.inference.adapt.AdaptSettings`).
DEFAULT_ADAPT_STEPS = 40
#: Default side in pixels of a small object's zoomed window (``--zoom``; :class:`~emvos.inference.zoom.ZoomSettings`).
DEFAULT_ZOOM_SIZE = 320
#: Default reach of each object around its previous-frame box, in the box's longer side (``--reach``;
#: :mod:`~emvos.inference.reach`).
DEFAULT_REACH = 0.25

_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
#: The models shipped inside the package, by the name ``--checkpoint`` also accepts: ``emvos-lite``
#: (the default: fast) and ``emvos-base`` (more accurate, slower; docs/model-card.md).
SHIPPED_MODELS = {"emvos-lite": _WEIGHTS / "emvos-lite.pt", "emvos-base": _WEIGHTS / "emvos-base.pt"}
#: The model used when no checkpoint is given.
SHIPPED_MODEL = SHIPPED_MODELS["emvos-lite"]


def checkpoint_file(checkpoint: str | Path | None) -> Path:
    """The file a checkpoint argument names: a path, a shipped model's name, or ``None`` for the default model.

    An existing file wins over a shipped model of the same name.
    """
    if checkpoint is None:
        return SHIPPED_MODEL
    path = Path(checkpoint)
    if str(checkpoint) in SHIPPED_MODELS and not path.exists():
        return SHIPPED_MODELS[str(checkpoint)]
    return path


def check_checkpoint(checkpoint: str | Path | None) -> None:
    """Refuse a checkpoint argument that names no file and no shipped model (before any work).

    Raises:
        EmvosInputError: one line naming the file and the shipped models.
    """
    if checkpoint is None or str(checkpoint) in SHIPPED_MODELS:
        return
    path = checkpoint_file(checkpoint)
    if not path.is_file():
        raise EmvosInputError(f"{path}: checkpoint not found; pass an existing checkpoint file or a shipped model "
                              f"({', '.join(SHIPPED_MODELS)})")


def check_setting_names(settings: type, names: Iterable[str], what: str) -> None:
    """Refuse setting names the dataclass ``settings`` does not have (plain data: a model file, JSON).

    Raises:
        ValueError: naming the unknown ones, as ``"<what> settings name ..."``.
    """
    unknown = sorted(set(names) - {f.name for f in dataclasses.fields(settings)})
    if unknown:
        raise ValueError(f"{what} settings name {', '.join(unknown)}, which this emvos does not know")
