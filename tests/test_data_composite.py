"""Copy-paste composites (dataset kind ``composite``) and crowd benchmarks on a tiny synthetic DAVIS-2016 folder.

Each synthetic frame shows one red square (the sequence's object) on a blue background, so every
object of a composite, pasted or not, is red: the target's mask must lie on red pixels, and the red
pixels it leaves out are the other objects, which are background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.cli import main
from emvos.data import DavisClips
from emvos.data.composite import CompositeClips
from emvos.data.crowd import ping_pong, write_crowd_benchmark
from emvos.errors import EmvosInputError
from emvos.io.masks import read_label_png
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


def test_joint_clips_keep_every_first_frame_object_numbered_from_one(davis: Path) -> None:
    single = composites(davis, plain_p=0.0, lookalike_p=1.0, scale=(0.6, 1.0), speed=0.0, behind_p=0.0)
    joint = composites(davis, plain_p=0.0, lookalike_p=1.0, scale=(0.6, 1.0), speed=0.0, behind_p=0.0, joint=True)
    several = 0
    for k in range(12):
        sample, target = joint[k], single[k]
        assert torch.equal(sample["frames"], target["frames"])  # the same draws: only the labels differ
        ids = sample["masks"]
        count = int(ids[0].max())
        assert ids[0].unique().tolist() == list(range(count + 1))  # 1..K, each in the first frame
        assert int(ids.max()) == count  # objects that appear later are background
        # The single-object sample's target is one of them, with the same pixels in every frame.
        assert any(torch.equal(ids == i, target["masks"].bool()) for i in range(1, count + 1))
        several += count > 1
    assert several >= 6


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
                                    {"scale": (0.0, 0.5)}, {"scale": (0.8, 0.4)}, {"speed": -1.0},
                                    {"attach_p": 2.0}])
def test_bad_options_are_value_errors_naming_them(davis: Path, option: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        composites(davis, **option)


def test_the_composite_kind_leaves_out_the_held_out_sequences(davis: Path) -> None:
    data = DataConfig(kind="composite", root=str(davis), options={"year": 2016, "max_pasted": 2})
    dataset = build_dataset(data, clip_len=LENGTH, size=SIZE, seed=0, exclude=["b"])
    assert isinstance(dataset, CompositeClips)
    assert [video.name for video in dataset.clips.videos] == ["a"]


# -- the crowd benchmark -----------------------------------------------------------------------------
def write_crowd(out: Path, davis: Path, **options: object) -> list[str]:
    settings: dict[str, object] = {"source": davis, "sequences": ["a", "b"], "videos": 2, "objects": 6,
                                   "length": 12, "size": (72, 100), "seed": 1, "area": (60.0, 400.0)}
    return write_crowd_benchmark(out, **(settings | options))  # type: ignore[arg-type]


def test_ping_pong_plays_forwards_then_backwards() -> None:
    assert [ping_pong(t, 4) for t in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [ping_pong(t, 1) for t in range(3)] == [0, 0, 0]


def test_crowd_videos_hold_the_pasted_objects_where_their_pixels_are(tmp_path: Path, davis: Path) -> None:
    names = write_crowd(tmp_path / "crowd", davis)
    assert names == ["crowd-0000", "crowd-0001"]
    root = tmp_path / "crowd"
    assert (root / "ImageSets" / "2017" / "val.txt").read_text().split() == names
    metadata = json.loads((root / "crowd.json").read_text())
    for name, record in zip(names, metadata["videos_written"], strict=True):
        frames = sorted((root / "JPEGImages" / "480p" / name).iterdir())
        assert len(frames) == 12
        first = read_label_png(root / "Annotations" / "480p" / name / "00000.png").labels
        assert first.shape == (72, 100) and int(first.max()) <= 6
        assert record["first_frame_areas"] == np.bincount(first.ravel(), minlength=7)[1:].tolist()
        assert sum(area > 0 for area in record["first_frame_areas"][1:]) >= 3  # most pasted objects are visible
        sources = record["object_sources"]  # object k's source sequence at index k - 1; object 1 is the scene
        assert len(sources) == 6 and sources[0] == record["scene"] and set(sources) <= {"a", "b"}
        for t in (0, 7):
            labels = read_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png").labels
            pixels = np.asarray(Image.open(frames[t]).convert("RGB"), dtype=np.int16)
            inner = labels[1:-1, 1:-1]
            solid = (inner > 0) & (inner == labels[:-2, 1:-1]) & (inner == labels[2:, 1:-1]) \
                & (inner == labels[1:-1, :-2]) & (inner == labels[1:-1, 2:])
            on_red = np.abs(pixels[1:-1, 1:-1] - RED).max(axis=-1) < 60
            assert on_red[solid].mean() > 0.9  # every object, pasted or not, is a red square


def test_crowd_benchmarks_are_reproducible(tmp_path: Path, davis: Path) -> None:
    write_crowd(tmp_path / "one", davis, videos=1)
    write_crowd(tmp_path / "two", davis, videos=1)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
               for f in files if f.name != "crowd.json")


@pytest.mark.parametrize(("option", "named"), [({"objects": 0}, "--objects"), ({"objects": 255}, "--objects"),
                                               ({"length": 2}, "--frames"), ({"area": (0.0, 5.0)}, "--area"),
                                               ({"sequences": ["a", "nope"]}, "nope")])
def test_crowd_arguments_are_checked_before_writing(tmp_path: Path, davis: Path, option: dict[str, object],
                                                    named: str) -> None:
    with pytest.raises(EmvosInputError, match=named):
        write_crowd(tmp_path / "out", davis, **option)
    assert not (tmp_path / "out" / "JPEGImages").exists()


def test_synth_crowd_command(tmp_path: Path, davis: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "crowd", "--source", str(davis), "--sequences", "a,b", "--objects", "4", "--frames", "5",
            "--size", "100x72", "--quiet"]
    assert main([*args, "--area", "60,300", "--out", str(tmp_path / "crowd")]) == 0
    assert "4 objects each" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "crowd")]) == 2  # not empty any more
    assert main([*args, "--area", "big", "--out", str(tmp_path / "other")]) == 2
    assert "--area" in capsys.readouterr().err


def test_a_carried_object_moves_with_its_carrier(davis: Path) -> None:
    dataset = composites(davis, attach_p=1.0)
    source = {"frames": torch.ones(LENGTH, 3, SIZE, SIZE), "masks": torch.ones(LENGTH, SIZE, SIZE, dtype=torch.int64)}
    carrier = np.array([[20.0 + 3 * t, 30.0 - 2 * t] for t in range(LENGTH)])  # (y, x) per frame
    frames, ids = torch.zeros(LENGTH, 3, SIZE, SIZE), torch.zeros(LENGTH, SIZE, SIZE, dtype=torch.int64)
    dataset._paste(frames, ids, source, object_id=2, side=10, rng=np.random.default_rng(0), carrier=carrier)
    centres = np.array([torch.nonzero(ids[t] == 2).float().mean(0).numpy() for t in range(LENGTH)])
    assert np.allclose(centres - centres[0], carrier - carrier[0], atol=0.51)
    assert np.abs(centres[0] - carrier[0]).max() <= 5.5  # on the carrier: within half a side of its centre
