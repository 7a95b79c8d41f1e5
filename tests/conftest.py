"""Shared fixtures: where the DAVIS data used by the tests lives, and skipping cleanly without it.

The data is not part of the repository (DAVIS is CC BY 4.0; see README). Tests look for it in
``$EMVOS_TEST_DATA`` or in ``../shared/data`` next to the repository, and skip, saying why, when
it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from emvos.model.encoders import Encoder, FeatureInfo, Features, register_encoder
from emvos.runtime import HUGE_PAGES_ENV, MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent

# Test tensors are tiny: one thread avoids OpenMP synchronisation that dominates at these sizes.
torch.set_num_threads(1)


def _data_root() -> Path:
    return Path(os.environ.get("EMVOS_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def davis2016_root() -> Path:
    """The DAVIS-2016 training sequences (DAVIS layout), or skip."""
    root = _data_root() / "davis2016-train"
    if not (root / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"DAVIS-2016 training data not found at {root} (set EMVOS_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def davis2017_sample_root() -> Path:
    """The multi-object DAVIS-2017 sample (``schoolgirls``, 7 objects, 240p), or skip."""
    root = _data_root() / "davis2017-sample"
    if not (root / "JPEGImages" / "480p" / "schoolgirls").is_dir():
        pytest.skip(f"DAVIS-2017 sample not found at {root} (set EMVOS_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    """COCO128-seg (128 COCO images, YOLO segmentation polygons), or skip."""
    root = _data_root() / "coco128-seg"
    if not (root / "labels" / "train2017").is_dir():
        pytest.skip(f"COCO128-seg not found at {root} (set EMVOS_TEST_DATA)")
    return root


class TinyEncoder(Encoder):
    """A small random encoder for tests where the backbone's weights are not the point."""

    feature_info = FeatureInfo(channels=(8, 16, 32))

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.s4 = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.BatchNorm2d(8), nn.ReLU())
        self.s8 = nn.Sequential(nn.Conv2d(8, 16, 2, 2), nn.ReLU())
        self.s16 = nn.Sequential(nn.Conv2d(16, 32, 2, 2), nn.ReLU())

    def extract(self, x: torch.Tensor) -> Features:
        s4 = self.s4(x)
        s8 = self.s8(s4)
        return Features(s4, s8, self.s16(s8))


register_encoder("tiny-test")(TinyEncoder)


@pytest.fixture(autouse=True)
def _restore_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo, after each test, the environment variables that ``emvos`` commands run in-process set."""
    for name in (HUGE_PAGES_ENV, MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV):
        was = os.environ.get(name)
        monkeypatch.setenv(name, "")  # records the value before the test, restored after it
        if was is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, was)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An emvos checkpoint of a random network on the tiny test encoder (seed 0)."""
    from emvos.model.checkpoint import save_checkpoint
    from emvos.model.config import ModelConfig
    from emvos.model.network import EMVOS

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny.pt"
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None))
    return path
