"""An exported model's folder: its ONNX graphs and the manifest that describes them, and the cache of
exports made on demand. Free of PyTorch.

A folder written by ``emvos export --onnx DIR`` holds :data:`GRAPHS` and :data:`MANIFEST`, written
last: a folder with a manifest is complete. Inputs and outputs of the graphs:

``encoder.onnx``
    ``frame (H, W, 3) uint8`` RGB, ``sizes (4,) int64`` = ``(1, 3, H', W')`` the resized size,
    ``pads (8,) int64`` = ONNX ``Pad`` order ``(0, 0, top, left, 0, 0, bottom, right)`` ->
    ``shared16 (1, w16, h, w)``, ``shared8 (1, w8, 2h, 2w)``, ``shared4 (1, w4, 4h, 4w)`` and
    ``key_<branch> (1, C, h * w)`` for each matching branch.
``step.onnx``
    the query's five tensors, ``first_key_<branch> (1, C, Nf)`` and ``first_mask (1, O, 2, Nf)``
    (the first-frame references of every object, side by side), ``prev_key_<branch> (1, C, N)`` and
    ``prev_mask (1, O, 2, N)`` -> ``probs (O, 2, H'', W'')`` each object's background/foreground
    probabilities.
``finish.onnx``
    ``probs (O, 2, H'', W'')``, ``crop_starts (2,)``/``crop_ends (2,) int64`` (the padding to drop),
    ``size (2,) int64`` the frame's ``(H, W)`` -> ``labels (H, W) uint8`` (0 background, ``i`` the
    ``i``-th object) and ``prev_mask (1, O, 2, N)``, the frame's reference mask for the next frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from emvos.errors import EmvosInputError
from emvos.inference.settings import checkpoint_file

#: The exported graphs, in the order the driver runs them.
GRAPHS = ("encoder.onnx", "step.onnx", "finish.onnx")
#: The manifest: written last, so that its presence marks a complete export.
MANIFEST = "emvos-onnx.json"
#: Version of the graphs' inputs and outputs; a driver reads only folders of its own version.
FORMAT_VERSION = 1
#: Where exports made on demand are kept, one folder per model file's hash (``$EMVOS_CACHE`` overrides).
CACHE_ENV = "EMVOS_CACHE"


@dataclass(frozen=True)
class OnnxModel:
    """An exported model's folder, as its manifest describes it.

    Attributes:
        folder: the folder holding :data:`GRAPHS` and :data:`MANIFEST`.
        branches: matching branches, in the order of the graphs' ``key_<branch>`` inputs.
        stride: the encoder's coarsest stride; frames are padded to a multiple of it.
        source_sha256: hash of the checkpoint the graphs were exported from.
    """

    folder: Path
    branches: tuple[str, ...]
    stride: int
    source_sha256: str

    def graph(self, name: str) -> Path:
        """The path of one of :data:`GRAPHS`."""
        return self.folder / name


def read_onnx_folder(folder: str | os.PathLike[str]) -> OnnxModel:
    """Read and check an exported model's folder.

    Raises:
        EmvosInputError: no manifest (not an export, or an interrupted one), another format
            version, or a graph missing.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise EmvosInputError(f"{folder}: no {MANIFEST}; give a folder written by `emvos export --onnx DIR`")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        version, branches, stride, source = (data["format_version"], tuple(data["branches"]), int(data["stride"]),
                                             str(data["source_sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise EmvosInputError(f"{manifest}: not an emvos ONNX manifest ({exc}); export the model again") from None
    if version != FORMAT_VERSION:
        raise EmvosInputError(f"{folder}: exported in ONNX format version {version}, this emvos reads "
                              f"{FORMAT_VERSION}; export the model again with this emvos")
    missing = [name for name in GRAPHS if not (folder / name).is_file()]
    if missing:
        raise EmvosInputError(f"{folder}: {', '.join(missing)} missing; export the model again")
    return OnnxModel(folder, branches, stride, source)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """``$EMVOS_CACHE``, else ``$XDG_CACHE_HOME/emvos``, else ``~/.cache/emvos``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emvos"


def cached_onnx_folder(checkpoint: str | os.PathLike[str] | None = None) -> OnnxModel:
    """The ONNX export of ``checkpoint`` (``None``: the shipped model), exported on first use and cached.

    The cache folder is named after the checkpoint's hash and the format version, so a changed file
    is exported again. The export runs in a child process (``python -m emvos export --onnx``): this
    process never imports PyTorch.

    Raises:
        EmvosInputError: the checkpoint does not exist, or the export failed (its error is repeated).
    """
    path = checkpoint_file(checkpoint)
    if not path.is_file():
        raise EmvosInputError(f"{path}: no such checkpoint; pass --checkpoint FILE or --onnx DIR")
    folder = cache_root() / "onnx" / f"v{FORMAT_VERSION}-{file_sha256(path)[:16]}"
    if not (folder / MANIFEST).is_file():
        command = [sys.executable, "-m", "emvos", "export", "--onnx", str(folder), "--checkpoint", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise EmvosInputError(f"{path}: exporting to ONNX in {folder} failed ({reason}); run "
                                  f"`emvos export --onnx DIR --checkpoint {path}` to see why")
    return read_onnx_folder(folder)
