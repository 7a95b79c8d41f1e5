"""The official EMVOS implementation, imported from a local checkout, for side-by-side checks.

The official code (``github.com/suhwan-cho/EMVOS``) is not shipped with emvos, and nothing of it is
copied here: the user checks it out and passes its folder (or its ``emvos.py``), which is imported
as it is. Its ``densenet121(pretrained=True)`` is answered with random weights, offline, so nothing
is downloaded; a checkpoint (or the timing, which does not depend on weights) makes that moot.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
import torchvision
from torch import Tensor, nn

from emvos.errors import EmvosInputError

#: The official model's file, at the root of its repository.
OFFICIAL_FILE = "emvos.py"


def official_model_file(path: str | Path) -> Path:
    """The official ``emvos.py``: ``path`` itself, or the file at the root of a checkout folder."""
    path = Path(path)
    file = path / OFFICIAL_FILE if path.is_dir() else path
    if not file.is_file():
        raise EmvosInputError(f"{file}: not found; pass a checkout of github.com/suhwan-cho/EMVOS "
                              f"(the folder holding {OFFICIAL_FILE}) or that file")
    return file


def import_official(path: str | Path) -> ModuleType:
    """Import the official ``emvos.py`` (given as a file or its checkout) under another name.

    It is imported as ``official_emvos``: under its own name it would shadow the emvos package.
    """
    file = official_model_file(path)
    spec = importlib.util.spec_from_file_location("official_emvos", file)
    if spec is None or spec.loader is None:
        raise EmvosInputError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever the checkout's code raises, the checkout is to fix
        reason = (str(exc).splitlines() or [""])[0]
        raise EmvosInputError(f"{file}: cannot be imported ({exc.__class__.__name__}: {reason}); "
                              "pass a working checkout of the official EMVOS code") from None
    if not hasattr(module, "EMVOS"):
        raise EmvosInputError(f"{file}: defines no EMVOS model; is this the official EMVOS emvos.py?")
    return module


@contextlib.contextmanager
def no_pretrained_download() -> Iterator[None]:
    """Make ``torchvision.models.densenet121(pretrained=True)`` build random weights offline."""
    original = torchvision.models.densenet121

    def densenet121(*args: object, **kwargs: object) -> nn.Module:
        kwargs.pop("pretrained", None)
        kwargs["weights"] = None
        return original(*args, **kwargs)

    torchvision.models.densenet121 = densenet121
    try:
        yield
    finally:
        torchvision.models.densenet121 = original


def build_official(module: ModuleType, seed: int = 0) -> nn.Module:
    """The official ``EMVOS()`` with random weights (``torch.manual_seed(seed)``), in evaluation mode."""
    torch.manual_seed(seed)
    with no_pretrained_download():
        return module.EMVOS().eval()


def official_forward(model: nn.Module, clip: Tensor, first_mask: Tensor) -> Tensor:
    """Segment a clip with the official model as its evaluator does: one call for the whole clip.

    Args:
        model: the official ``EMVOS``.
        clip: ``(1, L, 3, H, W)`` RGB in ``[0, 1]``.
        first_mask: ``(1, 1, H, W)`` int64 object ids of frame 0.

    Returns:
        ``(1, L, 1, H, W)`` object ids (frame 0: the given mask).
    """
    with torch.inference_mode():
        return model(clip, [first_mask] + [None] * (clip.shape[1] - 1), None)["masks"]
