"""Copy-paste composites (dataset kind ``composite``) on a tiny synthetic DAVIS-2016 folder.

Each synthetic frame shows one red square (the sequence's object) on a blue background, so every
object of a composite, pasted or not, is red: the target's mask must lie on red pixels, and the red
pixels it leaves out are the other objects, which are background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.data import DavisClips
from emvos.data.composite import CompositeClips
from emvos.train.config import DataConfig
from emvos.train.datasets import build_dataset

HEIGHT, WIDTH, SIZE, LENGTH = 96, 128, 64, 4
RED = np.array([230, 20, 20])


def make_davis2016(root: Path, sequences: dict[str, int]) -> Path:
    """A DAVIS-2016 layout: a red square moving right on a blue background, 0/255 masks."""
    for name, count in sequences.items():
        for t in range(count):
            labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            labels[30:70, 20 + 4 * t:60 + 4 * t] = 255
            pixels = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            pixels[...] = (20, 20, 60 + 10 * t)
            pixels[labels > 0] = RED
            for folder, image, suffix in (("JPEGImages", Image.fromarray(pixels), ".jpg"),
                                          ("Annotations", Image.fromarray(labels, "L"), ".png")):
                path = root / folder / "480p" / name / f"{t:05d}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=98) if suffix == ".jpg" else image.save(path)
    split = root / "ImageSets" / "2016" / "train.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("".join(f"{name}\n" for name in sequences))
    return root


@pytest.fixture(scope="module")
def davis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_davis2016(tmp_path_factory.mktemp("davis2016"), {"a": 8, "b": 8})


def composites(root: Path, **options: object) -> CompositeClips:
    return CompositeClips(root, clip_length=LENGTH, crop_size=SIZE, seed=3, **options)  # type: ignore[arg-type]


def red(sample: dict[str, torch.Tensor]) -> np.ndarray:
    """``(L, S, S)`` bool: pixels of an object's colour."""
    frames = sample["frames"].permute(0, 2, 3, 1).numpy() * 255
    return np.abs(frames - RED).max(axis=-1) < 40


def test_samples_follow_the_contract_and_are_deterministic(davis: Path) -> None:
    dataset, again = composites(davis), composites(davis)
    for k in range(6):
        sample = dataset[k]
        assert sample["frames"].shape == (LENGTH, 3, SIZE, SIZE) and sample["frames"].dtype == torch.float32
        assert sample["masks"].shape == (LENGTH, SIZE, SIZE) and sample["masks"].dtype == torch.int64
        assert set(sample["masks"].unique().tolist()) <= {0, 1} and sample["masks"][0].sum() > 0
        assert 0.0 <= sample["frames"].min() and sample["frames"].max() <= 1.0
        assert all(torch.equal(sample[key], again[k][key]) for key in sample)
    assert not torch.equal(dataset[0]["frames"], dataset[1]["frames"])


def test_the_target_is_one_object_and_the_others_are_background(davis: Path) -> None:
    dataset = composites(davis, plain_p=0.0, lookalike_p=1.0, scale=(0.6, 1.0), speed=0.0, behind_p=0.0)
    with_others = 0
    for k in range(12):
        sample = dataset[k]
        coloured, mask = red(sample), sample["masks"].numpy().astype(bool)
        # Anti-aliased paste edges blend colours: compare where the mask is solid.
        solid = mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1] & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:]
        assert coloured[:, 1:-1, 1:-1][solid].mean() > 0.95
        with_others += int(np.count_nonzero(coloured[0] & ~mask[0]) > 50)  # a clone left as background
    assert with_others >= 6


def test_plain_clips_are_the_davis_clips(davis: Path) -> None:
    dataset = composites(davis, plain_p=1.0)
    clips = DavisClips(davis, year=2016, clip_length=LENGTH, crop_size=SIZE, seed=3)
    for k in range(3):
        assert all(torch.equal(dataset[k][key], clips[k][key]) for key in ("frames", "masks"))


def test_pasted_objects_make_more_objects_than_the_scene(davis: Path) -> None:
    pasted = composites(davis, plain_p=0.0, lookalike_p=0.0, scale=(0.5, 0.9), speed=0.0)
    plain = composites(davis, plain_p=1.0)
    extra = [red(pasted[k])[0].sum() - red(plain[k])[0].sum() for k in range(8)]
    assert sum(e > 0 for e in extra) >= 6


@pytest.mark.parametrize("option", [{"max_pasted": 0}, {"plain_p": 1.5}, {"lookalike_p": -0.1},
                                    {"scale": (0.0, 0.5)}, {"scale": (0.8, 0.4)}, {"speed": -1.0}])
def test_bad_options_are_value_errors_naming_them(davis: Path, option: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        composites(davis, **option)


def test_the_composite_kind_leaves_out_the_held_out_sequences(davis: Path) -> None:
    data = DataConfig(kind="composite", root=str(davis), options={"year": 2016, "max_pasted": 2})
    dataset = build_dataset(data, clip_len=LENGTH, size=SIZE, seed=0, exclude=["b"])
    assert isinstance(dataset, CompositeClips)
    assert [video.name for video in dataset.clips.videos] == ["a"]
