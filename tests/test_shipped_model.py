"""The model shipped inside the package: small, loads without a checkpoint, and segments real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emvos.inference.predictor import SHIPPED_MODEL, VideoPredictor
from emvos.model.checkpoint import read_checkpoint

#: A sequence held out of the shipped model's training (see docs/model-card.md).
HELD_OUT = "car-turn"


def test_shipped_weights_are_small_half_precision_and_carry_the_encoder() -> None:
    """float16 weights, but the frozen encoder's ImageNet weights in float32 with their licence."""
    assert SHIPPED_MODEL.is_file()
    assert SHIPPED_MODEL.stat().st_size < 4 * 1024 * 1024
    data = read_checkpoint(SHIPPED_MODEL)
    assert data["encoder_included"] is True and data["encoder_weights"]["license"] == "Apache-2.0"
    for key, value in data["model"].items():
        if value.is_floating_point():
            assert value.dtype == (torch.float32 if key.startswith("encoder.") else torch.float16), key
    assert HELD_OUT in data["trained"]["train_config"]["val"]["sequences"]


def test_shipped_model_tracks_a_held_out_sequence(davis2016_root: Path) -> None:
    """No checkpoint given: the shipped model follows the car of a sequence it never trained on."""
    frames = sorted((davis2016_root / "JPEGImages" / "480p" / HELD_OUT).glob("*.jpg"))[:12]
    masks = [davis2016_root / "Annotations" / "480p" / HELD_OUT / f"{f.stem}.png" for f in frames]
    predictor = VideoPredictor.from_checkpoint(None, device="cpu", resolution=240)
    state = predictor.init_state()
    ious = []
    for i, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        truth = np.asarray(Image.open(mask).convert("L")) > 0
        given = truth.astype(np.uint8) if i == 0 else None
        labels = predictor.step(state, np.asarray(Image.open(frame).convert("RGB")), given).labels > 0
        if i > 0:
            ious.append((labels & truth).sum() / (labels | truth).sum())
    assert np.mean(ious) > 0.7, ious
