"""The distractor benchmark generator: determinism, the knobs, the DAVIS layout, training use, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.cli import main
from emvos.data import DavisClips, DistractorClips
from emvos.data.synthetic import (
    EASIEST,
    HARDEST,
    DistractorSettings,
    TextureSource,
    render_distractor_video,
    write_distractor_benchmark,
)
from emvos.errors import EmvosInputError
from emvos.eval.davis import evaluate_results
from emvos.train import DataConfig, build_dataset

SIZE = (64, 96)  # (H, W)
SETTINGS = DistractorSettings.from_difficulty(0.7)


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _write(out: Path, seed: int = 3, videos: int = 2, **kwargs: object) -> Path:
    write_distractor_benchmark(out, videos=videos, length=5, settings=kwargs.pop("settings", SETTINGS), seed=seed,
                               size=SIZE, **kwargs)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("bench") / "distractors")


def _video(seed: int, length: int = 4, size: tuple[int, int] = SIZE, **settings: float | int):
    return render_distractor_video(np.random.default_rng([seed, 0]), DistractorSettings.from_difficulty(
        settings.pop("difficulty", 0.5), **settings), size, length)


# -- determinism ------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(written: Path, tmp_path: Path) -> None:
    assert _files(_write(tmp_path / "again")) == _files(written)


def test_another_seed_gives_other_videos(written: Path, tmp_path: Path) -> None:
    other = _files(_write(tmp_path / "other", seed=4))
    frames = [name for name in other if name.endswith(".jpg")]
    assert other.keys() == _files(written).keys()
    assert all(other[name] != _files(written)[name] for name in frames[:3])


def test_first_videos_do_not_depend_on_how_many_are_written(written: Path, tmp_path: Path) -> None:
    one = _files(_write(tmp_path / "one", videos=1))
    whole = _files(written)
    assert all(whole[name] == data for name, data in one.items() if "dist-0000" in name)


# -- layout and readers -----------------------------------------------------------------------------
def test_davis_layout(written: Path) -> None:
    names = (written / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert names == ["dist-0000", "dist-0001"]
    for name in names:
        frames = sorted((written / "JPEGImages" / "480p" / name).iterdir())
        masks = sorted((written / "Annotations" / "480p" / name).iterdir())
        assert [p.name for p in frames] == [f"{t:05d}.jpg" for t in range(5)]
        assert [p.name for p in masks] == [f"{t:05d}.png" for t in range(5)]
        with Image.open(frames[0]) as image:
            assert image.size == (SIZE[1], SIZE[0]) and image.mode == "RGB"
        with Image.open(masks[0]) as mask:
            assert mask.mode == "P"
            assert set(np.unique(np.asarray(mask))) == {0, 1, 2}  # both targets visible in frame 0
    metadata = json.loads((written / "distractors.json").read_text())
    assert metadata["seed"] == 3 and metadata["settings"]["distractors"] == SETTINGS.distractors
    assert [s["name"] for s in metadata["sequences"]] == names


def test_distractor_maps_are_disjoint_from_the_targets(written: Path) -> None:
    for mask in (written / "Annotations" / "480p").rglob("*.png"):
        distractors = written / "Distractors" / "480p" / mask.parent.name / mask.name
        labels, others = np.asarray(Image.open(mask)), np.asarray(Image.open(distractors))
        assert labels.max() <= SETTINGS.targets
        assert others.max() <= SETTINGS.targets * SETTINGS.distractors
        assert not np.any((labels > 0) & (others > 0))


def test_readable_by_davis_clips(written: Path) -> None:
    clips = DavisClips(written, year=2017, split="val", clip_length=3, crop_size=48, seed=0)
    sample = clips[0]
    assert sample["frames"].shape == (3, 3, 48, 48) and sample["masks"].shape == (3, 48, 48)
    assert set(sample["masks"].unique().tolist()) <= {0, 1} and sample["masks"][0].any()


def test_readable_by_the_evaluation(written: Path) -> None:
    result = evaluate_results(written / "Annotations" / "480p", written, year=2017, split="val", workers=1)
    assert [obj.name for obj in result.objects] == ["dist-0000_1", "dist-0000_2", "dist-0001_1", "dist-0001_2"]
    assert result.j.mean == pytest.approx(1.0) and result.f.mean == pytest.approx(1.0)


# -- what a video holds -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_targets_visible_in_frame_zero_and_distractors_never_targets(seed: int) -> None:
    video = _video(seed, difficulty=1.0, targets=3)  # crowded: 3 targets, 5 clones each
    visible = np.bincount(video.labels[0].ravel(), minlength=4)
    assert (visible[1:] >= 15).all()
    assert video.labels.max() <= 3 and video.distractors.max() <= 15
    assert not np.any((video.labels > 0) & (video.distractors > 0))
    assert video.frames.shape == (4, *SIZE, 3) and video.frames.dtype == np.uint8
    assert video.occlusion.shape == (4, 3) and (video.occlusion[0] <= 0.5).all()


def test_difficulty_raises_every_knob() -> None:
    levels = [DistractorSettings.from_difficulty(d) for d in np.linspace(0, 1, 5)]
    assert levels[0] == EASIEST and levels[-1] == HARDEST
    for name in ("distractors", "similarity", "speed", "occlusion", "entering"):
        values = [getattr(level, name) for level in levels]
        assert values == sorted(values) and values[0] < values[-1], name
    assert DistractorSettings.from_difficulty(0.3, similarity=1.0, targets=1).similarity == 1.0


@pytest.mark.parametrize("bad", [{"difficulty": 1.5}, {"difficulty": -0.1}, {"similarity": 2.0}, {"targets": 0},
                                 {"distractors": -1}, {"distractors": 2.5}, {"speed": -0.1}, {"colour": 1.0},
                                 {"distractors": 200}])
def test_settings_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DistractorSettings.from_difficulty(bad.pop("difficulty", 0.5), **bad)


def test_distractor_count() -> None:
    assert not _video(0, distractors=0).distractors.any()
    ids = np.unique(_video(0, distractors=3, entering=0.0, occlusion=0.0).distractors)
    assert 0 < len(ids) - 1 <= 6


def test_entering_distractors_start_outside_the_frame() -> None:
    assert not _video(1, entering=1.0).distractors[0].any()
    assert _video(1, entering=1.0, length=40).distractors[-1].any()  # they come in
    assert _video(1, entering=0.0, occlusion=0.0).distractors[0].any()


def _target_motion(video) -> float:
    ys, xs = zip(*[np.nonzero(labels == 1) for labels in video.labels], strict=True)
    centres = np.array([(y.mean(), x.mean()) for y, x in zip(ys, xs, strict=True)])
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean())


def test_speed() -> None:
    slow = np.mean([_target_motion(_video(s, length=6, size=(96, 96), speed=0.005, distractors=0)) for s in range(3)])
    fast = np.mean([_target_motion(_video(s, length=6, size=(96, 96), speed=0.05, distractors=0)) for s in range(3)])
    assert fast > 4 * slow


def _colour_gap(video) -> float:
    """Mean RGB distance, in frame 0, between target 1 and each of its visible distractors."""
    frame = video.frames[0].astype(np.float64)
    target = frame[video.labels[0] == 1].mean(axis=0)
    gaps = [np.linalg.norm(frame[video.distractors[0] == d].mean(axis=0) - target)
            for d in np.unique(video.distractors[0]) if 0 < d <= 3 and (video.distractors[0] == d).sum() > 20]
    return float(np.mean(gaps))


def test_similarity() -> None:
    settings = {"targets": 1, "distractors": 3, "entering": 0.0, "occlusion": 0.0, "length": 1, "size": (96, 96)}
    alike = np.mean([_colour_gap(_video(s, similarity=1.0, **settings)) for s in range(4)])
    unlike = np.mean([_colour_gap(_video(s, similarity=0.0, **settings)) for s in range(4)])
    assert alike < 10 and unlike > 3 * alike


@pytest.mark.slow
def test_occlusion() -> None:
    settings = {"targets": 1, "distractors": 4, "entering": 0.0, "speed": 0.03, "length": 20, "size": (128, 128)}
    crossing = np.mean([_video(s, occlusion=1.0, **settings).occlusion.mean() for s in range(6)])
    wandering = np.mean([_video(s, occlusion=0.0, **settings).occlusion.mean() for s in range(6)])
    assert crossing > 0.1 and crossing > 3 * wandering


# -- textures ---------------------------------------------------------------------------------------
def test_texture_folder(tmp_path: Path) -> None:
    photos = tmp_path / "root" / "JPEGImages" / "480p" / "seq"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photos / f"{i:05d}.jpg")
    (tmp_path / "root" / "mask.png").write_bytes(b"not an image: outside JPEGImages, never read")
    source = TextureSource(tmp_path / "root")
    assert [p.name for p in source.files] == ["00000.jpg", "00001.jpg"]
    first = render_distractor_video(np.random.default_rng(5), SETTINGS, SIZE, 2, source)
    again = render_distractor_video(np.random.default_rng(5), SETTINGS, SIZE, 2, TextureSource(tmp_path / "root"))
    assert np.array_equal(first.frames, again.frames)
    procedural = render_distractor_video(np.random.default_rng(5), SETTINGS, SIZE, 2)
    assert not np.array_equal(first.frames, procedural.frames)
    with pytest.raises(EmvosInputError, match="not a folder"):
        TextureSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmvosInputError, match="no .jpg/.png"):
        TextureSource(tmp_path / "empty")


@pytest.mark.slow
def test_davis_frames_as_textures(davis2016_root: Path, tmp_path: Path) -> None:
    out = _write(tmp_path / "bench", videos=1, texture_source=davis2016_root)
    assert len(list(out.rglob("*.jpg"))) == 5
    assert json.loads((out / "distractors.json").read_text())["texture_source"] == str(davis2016_root)


# -- training ---------------------------------------------------------------------------------------
def test_training_dataset_kind() -> None:
    dataset = build_dataset(DataConfig(kind="distractors", options={"difficulty": 0.8, "targets": 1}), 3, 48, 7)
    assert isinstance(dataset, DistractorClips) and dataset.settings.targets == 1
    sample = dataset[11]
    assert sample["frames"].shape == (3, 3, 48, 48) and sample["frames"].dtype == torch.float32
    assert sample["masks"].shape == (3, 48, 48) and sample["masks"].dtype == torch.int64
    assert set(sample["masks"].unique().tolist()) == {0, 1} and sample["masks"][0].any()
    assert torch.equal(dataset[11]["frames"], sample["frames"])
    assert not torch.equal(dataset[12]["frames"], sample["frames"])


@pytest.mark.parametrize("options", [{"difficulty": 2.0}, {"colour": 1}, {"frame_size": (16, 16)}])
def test_training_dataset_refuses_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(EmvosInputError):
        build_dataset(DataConfig(kind="distractors", options=options), 3, 48, 0)


# -- command line -----------------------------------------------------------------------------------
def test_cli_writes_a_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["synth", "distractors", "--out", str(out), "--videos", "1", "--frames", "3", "--size", "96x64",
                 "--difficulty", "0.2", "--distractors", "2", "--seed", "9", "--quiet"]) == 0
    assert "wrote 1 videos" in capsys.readouterr().out
    settings = json.loads((out / "distractors.json").read_text())["settings"]
    assert settings["distractors"] == 2 and settings["similarity"] == DistractorSettings.from_difficulty(0.2).similarity
    with Image.open(out / "JPEGImages" / "480p" / "dist-0000" / "00002.jpg") as image:
        assert image.size == (96, 64)


@pytest.mark.parametrize(("args", "message"), [
    (["--difficulty", "1.5"], "difficulty must lie in [0, 1]"),
    (["--similarity", "2"], "similarity must lie in [0, 1]"),
    (["--frames", "2"], "--frames must be at least 3"),
    (["--videos", "0"], "--videos must be at least 1"),
    (["--seed", "-1"], "--seed must be non-negative"),
    (["--size", "96by64"], "expected WIDTHxHEIGHT"),
    (["--size", "20x20"], "--size must be at least 32x32"),
    (["--split", "../x"], "is not a file name"),
    (["--texture-source", "/nonexistent/photos"], "texture source is not a folder"),
    (["--out", "{existing}"], "not an empty folder"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                       message: str) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "file.txt").write_text("keep me")
    base = ["synth", "distractors", "--out", str(tmp_path / "new"), "--videos", "1", "--frames", "3",
            "--size", "96x64", "--quiet"]
    assert main(base + [a.format(existing=existing) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emvos: error: ") and message in err and err.count("\n") == 1
    assert (existing / "file.txt").read_text() == "keep me"
