"""The models shipped inside the package: small, load by name or without a checkpoint, segment real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.inference.predictor import VideoPredictor, adapt_settings
from emvos.inference.settings import SHIPPED_MODEL, SHIPPED_MODELS
from emvos.model.checkpoint import read_checkpoint
from emvos.train.config import load_config

#: A sequence held out of the shipped models' training (see docs/model-card.md).
HELD_OUT = "car-turn"
#: Each shipped model's encoder and largest file size in MiB.
EXPECTED = {"emvos-lite": ("efficientnet_lite0", 4), "emvos-base": ("efficientnet_lite2", 7)}


def test_every_shipped_model_is_described() -> None:
    assert set(SHIPPED_MODELS) == set(EXPECTED) and SHIPPED_MODEL == SHIPPED_MODELS["emvos-lite"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_weights_are_small_half_precision_and_carry_the_encoder(name: str) -> None:
    """float16 weights, but the frozen encoder's ImageNet weights in float32 with their licence."""
    path = SHIPPED_MODELS[name]
    encoder, mib = EXPECTED[name]
    assert path.is_file() and path.stat().st_size < mib * 1024 * 1024
    data = read_checkpoint(path)
    assert data["config"]["encoder"] == encoder
    assert data["encoder_included"] is True and data["encoder_weights"]["license"] == "Apache-2.0"
    for key, value in data["model"].items():
        if value.is_floating_point():
            assert value.dtype == (torch.float32 if key.startswith("encoder.") else torch.float16), key
    assert HELD_OUT in data["trained"]["train_config"]["val"]["sequences"]


def test_shipped_models_carry_their_adaptation_settings() -> None:
    """emvos-base adapts as its file recommends (a lower learning rate, clips where the target is away),
    the settings its presets write; emvos-lite at the defaults but a lower learning rate for joint
    adaptation, as its last preset writes."""
    base = adapt_settings("emvos-base")
    assert base is not None and (base.lr, base.absent_p, base.steps) == (2e-4, 0.5, 40)
    recommended = read_checkpoint(SHIPPED_MODELS["emvos-base"])["adapt"]
    presets = ("emvos-base", "emvos-base-joint", "emvos-base-joint-coco")
    assert all(load_config(name).adapt == recommended for name in presets)
    lite = adapt_settings(None)
    assert lite is not None and (lite.lr, lite.joint_lr, lite.absent_p) == (5e-4, 3e-4, 0.0)
    assert read_checkpoint(SHIPPED_MODELS["emvos-lite"])["adapt"] == load_config("emvos-lite-joint-coco").adapt


@pytest.mark.parametrize("name", [None, pytest.param("emvos-base", marks=pytest.mark.slow)])
def test_shipped_model_tracks_a_held_out_sequence(davis2016_root: Path, name: str | None) -> None:
    """The default (no checkpoint) and the named model follow the car of a sequence they never trained on."""
    frames = sorted((davis2016_root / "JPEGImages" / "480p" / HELD_OUT).glob("*.jpg"))[:12]
    masks = [davis2016_root / "Annotations" / "480p" / HELD_OUT / f"{f.stem}.png" for f in frames]
    predictor = VideoPredictor.from_checkpoint(name, device="cpu", resolution=240)
    assert predictor.adapt == adapt_settings(name)
    state = predictor.init_state()
    ious = []
    for i, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        truth = np.asarray(Image.open(mask).convert("L")) > 0
        given = truth.astype(np.uint8) if i == 0 else None
        labels = predictor.step(state, np.asarray(Image.open(frame).convert("RGB")), given).labels > 0
        if i > 0:
            ious.append((labels & truth).sum() / (labels | truth).sum())
    assert np.mean(ious) > 0.7, ious
