"""``emvos ytvos`` on a tiny synthetic YouTube-VOS split: submission layout, later objects, zip, bad inputs."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.cli import main
from emvos.eval.ytvos import list_videos, segment_video
from emvos.inference.predictor import FramePrediction, VideoPredictor
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

#: Two videos: (height, width), number of frames at 30 fps, {annotated frame: {object id: box}}.
#: ``late`` is first annotated at 00005; its 00010 PNG repeats object 1 next to the new object 2.
VIDEOS = {
    "early": ((40, 56), 16, {0: {1: (4, 20, 4, 24)}, 10: {2: (22, 38, 30, 52)}}),
    "late": ((48, 32), 11, {5: {1: (2, 20, 2, 16)}, 10: {1: (2, 20, 2, 16), 2: (26, 44, 14, 30)}}),
}
PALETTE = [int(v) for v in np.random.default_rng(1).integers(0, 256, 768)]


def _listed(count: int) -> list[str]:
    return [f"{i:05d}" for i in range(0, count, 5)]


def _make_ytvos(root: Path) -> Path:
    """``root/valid`` (every 5th frame, annotations, meta.json) and ``root/valid_all_frames`` (every frame)."""
    rng = np.random.default_rng(0)
    meta: dict[str, dict[str, object]] = {}
    for name, ((h, w), count, annotated) in VIDEOS.items():
        listed_dir = root / "valid" / "JPEGImages" / name
        all_dir = root / "valid_all_frames" / "JPEGImages" / name
        mask_dir = root / "valid" / "Annotations" / name
        for folder in (listed_dir, all_dir, mask_dir):
            folder.mkdir(parents=True)
        for i in range(count):
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image.save(all_dir / f"{i:05d}.jpg")
            if i % 5 == 0:
                image.save(listed_dir / f"{i:05d}.jpg")
        objects: dict[str, dict[str, object]] = {}
        for index, boxes in annotated.items():
            labels = np.zeros((h, w), np.uint8)
            for oid, (y0, y1, x0, x1) in boxes.items():
                labels[y0:y1, x0:x1] = oid
                objects.setdefault(str(oid), {"category": "thing", "frames": [f for f in _listed(count)
                                                                              if int(f) >= index]})
            png = Image.fromarray(labels, mode="L")
            png.putpalette(PALETTE)
            png.save(mask_dir / f"{index:05d}.png")
        meta[name] = {"objects": objects}
    (root / "valid" / "meta.json").write_text(json.dumps({"videos": meta}))
    return root


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_ytvos(tmp_path_factory.mktemp("ytvos"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None))
    return path


def _ytvos(root: Path, out: Path, checkpoint: Path | None, *extra: str) -> int:
    return main(["ytvos", "--root", str(root), "--out", str(out), "--resolution", "0", "--threads", "1", "--quiet",
                 *(["--checkpoint", str(checkpoint)] if checkpoint else []), *extra])


def _expected_entries() -> list[str]:
    return sorted(f"Annotations/{name}/{stem}.png" for name, (_, count, _) in VIDEOS.items()
                  for stem in _listed(count))


def _given(root: Path, name: str, stem: str) -> np.ndarray:
    return np.asarray(Image.open(root / "valid" / "Annotations" / name / f"{stem}.png"))


def _check_submission(root: Path, out: Path) -> None:
    """Exactly the listed frames, at their original size, with the annotations' palette, zipped at the root."""
    written = sorted(str(p.relative_to(out)) for p in (out / "Annotations").rglob("*") if p.is_file())
    assert written == _expected_entries()
    for name, ((h, w), _, _) in VIDEOS.items():
        for png in (out / "Annotations" / name).iterdir():
            image = Image.open(png)
            assert image.mode == "P" and image.size == (w, h) and image.getpalette() == PALETTE
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert sorted(archive.namelist()) == _expected_entries()
        for entry in archive.namelist():
            assert archive.read(entry) == (out / entry).read_bytes()
    assert not list(out.rglob(".*tmp*"))


@pytest.mark.slow
def test_submission_of_the_listed_frames(ytvos: Path, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    assert _ytvos(ytvos, out, checkpoint) == 0
    _check_submission(ytvos, out)
    early_new = _given(ytvos, "early", "00010")
    assert np.array_equal(np.asarray(Image.open(out / "Annotations/early/00000.png")), _given(ytvos, "early", "00000"))
    at_first = np.asarray(Image.open(out / "Annotations/early/00010.png"))
    assert (at_first[early_new == 2] == 2).all()  # the later object, exactly as given, at its first frame
    assert not np.asarray(Image.open(out / "Annotations/late/00000.png")).any()  # before any annotation
    summary = json.loads((out / "ytvos.json").read_text())
    assert summary["all_frames"] is False and summary["videos"] == 2 and summary["written"] == 7
    rows = {row["video"]: row for row in summary["per_video"]}
    assert (rows["early"]["frames"], rows["late"]["frames"]) == (4, 2)  # from the first annotation on
    assert (rows["early"]["objects"], rows["late"]["objects"]) == (2, 2)
    assert summary["model_fps"] > 0 and summary["end_to_end_fps"] > 0 and summary["peak_rss_mb"] > 0


@pytest.mark.slow
def test_all_frames_segments_every_frame_and_writes_the_listed(ytvos: Path, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    assert _ytvos(ytvos, out, checkpoint, "--all-frames", "--videos", "late,early") == 0
    _check_submission(ytvos, out)
    summary = json.loads((out / "ytvos.json").read_text())
    rows = {row["video"]: row for row in summary["per_video"]}
    assert summary["all_frames"] is True
    assert (rows["early"]["frames"], rows["late"]["frames"]) == (16, 6)
    assert (rows["early"]["written"], rows["late"]["written"]) == (4, 3)


@dataclass
class _CopyState:
    object_ids: list[int] = field(default_factory=list)
    labels: np.ndarray | None = None
    given: dict[int, np.ndarray] = field(default_factory=dict)
    index: int = 0
    frames: None = None
    pending: dict[int, np.ndarray] = field(default_factory=dict)


class _CopyPredictor:
    """A perfect tracker of static objects: each frame's labels are the last ones with the given mask pasted on."""

    device = torch.device("cpu")
    lookahead = 3  # chunks that straddle the annotated frames
    propagate = VideoPredictor.propagate

    def __init__(self) -> None:
        self.states: list[_CopyState] = []

    def step_many(self, state: _CopyState, images: list[np.ndarray],
                  masks: list[np.ndarray | None]) -> list[FramePrediction]:
        return [self.step(state, image, mask) for image, mask in zip(images, masks, strict=True)]

    def init_state(self) -> _CopyState:
        self.states.append(_CopyState())
        return self.states[-1]

    def step(self, state: _CopyState, image: np.ndarray, mask: np.ndarray | None = None) -> FramePrediction:
        if state.labels is None:
            state.labels = np.zeros(image.shape[:2], np.uint8)
        if mask is not None:
            state.given[state.index] = mask.copy()
            state.labels = np.where(mask != 0, mask, state.labels)
            state.object_ids += [int(i) for i in np.unique(mask) if i and i not in state.object_ids]
        state.index += 1
        return FramePrediction(state.index - 1, state.labels.copy(), tuple(state.object_ids))


@pytest.mark.parametrize("all_frames", [False, True])
def test_each_object_is_given_once_at_its_first_annotation(ytvos: Path, tmp_path: Path, all_frames: bool) -> None:
    predictor = _CopyPredictor()
    for video in list_videos(ytvos, "valid", all_frames):
        segment_video(predictor, video, tmp_path / video.name)  # type: ignore[arg-type]
    step = 1 if all_frames else 5  # frame index of a listed frame = int(stem) // step
    early, late = predictor.states
    assert sorted(early.given) == [0, 10 // step] and sorted(late.given) == [5 // step, 10 // step]
    assert np.array_equal(early.given[10 // step], _given(ytvos, "early", "00010"))
    # late/00010.png repeats object 1: only the new object 2 is given there.
    late_png = _given(ytvos, "late", "00010")
    assert np.array_equal(late.given[10 // step], np.where(late_png == 2, 2, 0))
    for name, first in (("early", 10), ("late", 10)):
        for stem in _listed(VIDEOS[name][1]):
            labels = np.asarray(Image.open(tmp_path / name / f"{stem}.png"))
            assert (2 in labels) == (int(stem) >= first)  # the later object from its first frame on
    assert not np.asarray(Image.open(tmp_path / "late" / "00000.png")).any()


@pytest.mark.slow
def test_shards_then_merge(ytvos: Path, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sharded"
    assert _ytvos(ytvos, out, checkpoint, "--shard", "1/2") == 0
    assert not (out / "submission.zip").exists()
    assert _ytvos(ytvos, out, None, "--merge") == 2
    assert "early" in capsys.readouterr().err
    assert _ytvos(ytvos, out, checkpoint, "--shard", "0/2") == 0
    assert _ytvos(ytvos, out, None, "--merge") == 0
    _check_submission(ytvos, out)
    assert [row["video"] for row in json.loads((out / "ytvos.json").read_text())["per_video"]] == ["early", "late"]


@pytest.mark.parametrize(
    ("damage", "extra", "message"),
    [
        (lambda root: None, ["--videos", "early,nope"], "nope"),
        (lambda root: (root / "valid" / "meta.json").unlink(), [], "meta.json"),
        (lambda root: (root / "valid" / "meta.json").write_text("{}"), [], "meta.json"),
        (lambda root: [p.unlink() for p in (root / "valid/Annotations/late").iterdir()], [], "late"),
        (lambda root: (root / "valid_all_frames/JPEGImages/early/00005.jpg").unlink(), ["--all-frames"], "00005"),
    ],
    ids=["unknown-video", "no-meta", "bad-meta", "no-annotation", "all-frames-incomplete"],
)
def test_bad_split_is_a_one_line_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object,
                                             extra: list[str], message: str, checkpoint: Path) -> None:
    root = _make_ytvos(tmp_path / "ytvos")
    damage(root)  # type: ignore[operator]
    code = _ytvos(root, tmp_path / "out", checkpoint, *extra)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("emvos: error:") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "{tmp}/missing"], "missing"),
        (["--root", "{tmp}/ytvos", "--split", "test"], "test"),
        (["--root", "{tmp}/ytvos", "--all-frames"], "valid_all_frames"),
    ],
    ids=["no-root", "no-split", "no-all-frames"],
)
def test_missing_folders_are_one_line_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   args: list[str], message: str) -> None:
    shutil.rmtree(_make_ytvos(tmp_path / "ytvos") / "valid_all_frames")
    code = main(["ytvos", *(a.format(tmp=tmp_path) for a in args), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("emvos: error:") and err.count("\n") == 1 and message in err
