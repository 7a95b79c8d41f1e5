"""``emvos segment``: directions and frame ranges, output formats, the review file, and the checks
made before any work (outputs writable, earlier results, frame sizes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from emvos.cli import main
from emvos.io import OverlayWriter, greyscale_overlay_palette, overlay
from emvos.io.formats import read_results

H, W, N = 48, 64, 6


@pytest.fixture()
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def _mask(path: Path, value: int = 1) -> Path:
    labels = np.zeros((H, W), np.uint8)
    labels[10:30, 12:40] = value
    Image.fromarray(labels, mode="L").save(path)
    return path


def _segment(tiny_checkpoint: Path, *args: object) -> int:
    return main(["segment", *map(str, args), "--checkpoint", str(tiny_checkpoint), "--quiet", "--threads", "1"])


def _written(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) for p in sorted(out.glob("*.png"))}


@pytest.mark.parametrize("direction, start, end, segmented", [
    ("forward", 0, None, range(0, N)),          # frames before the mask stay empty
    ("backward", 0, None, range(0, 4)),         # frames after the mask stay empty
    ("both", 1, 4, range(1, 5)),
])
def test_directions_and_ranges(direction: str, start: int, end: int | None, segmented: range, frames: Path,
                               tmp_path: Path, tiny_checkpoint: Path) -> None:
    mask = _mask(tmp_path / "00003.png")
    out = tmp_path / "out"
    extra = [] if end is None else ["--end", end]
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", out, "--direction", direction,
                    "--start", start, *extra) == 0
    written = _written(out)
    last = N - 1 if end is None else end
    assert sorted(written) == [f"{i:05d}" for i in range(start, last + 1)]
    np.testing.assert_array_equal(written["00003"], np.array(Image.open(mask)))
    for i in range(start, last + 1):
        if i not in segmented:
            assert not written[f"{i:05d}"].any()
    review = json.loads((out / "review.json").read_text())
    assert sorted(f["index"] for f in review["frames"]) == list(range(start, last + 1))


def test_backward_equals_forward_over_the_reversed_frames(frames: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    reversed_frames = tmp_path / "reversed"
    reversed_frames.mkdir()
    for i in range(N):
        os.link(frames / f"{i:05d}.png", reversed_frames / f"{N - 1 - i:05d}.png")
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "00005.png"), "--out", tmp_path / "back",
                    "--direction", "backward") == 0
    assert _segment(tiny_checkpoint, reversed_frames, "--mask", _mask(tmp_path / "00000.png"), "--out",
                    tmp_path / "fwd") == 0
    back, fwd = _written(tmp_path / "back"), _written(tmp_path / "fwd")
    for i in range(N):
        np.testing.assert_array_equal(back[f"{i:05d}"], fwd[f"{N - 1 - i:05d}"])


@pytest.mark.parametrize("format", ["binary", "coco", "npz"])
def test_formats_from_the_command_line(format: str, frames: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "m.png", 3), "--out", tmp_path / "p") == 0
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "m.png", 3), "--out", tmp_path / "f",
                    "--format", format) == 0
    palette = _written(tmp_path / "p")
    back = read_results(format, tmp_path / "f")
    assert sorted(back) == sorted(palette)
    for name, labels in palette.items():
        np.testing.assert_array_equal(back[name], labels)


def test_review_file_has_each_objects_confidence(frames: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "00000.png", 3), "--out", tmp_path / "o") == 0
    review = json.loads((tmp_path / "o" / "review.json").read_text())
    first = review["frames"][0]["objects"]["3"]
    assert first["area"] == 20 * 28 and first["confidence"] > 0.9
    for frame in review["frames"]:
        assert 0 <= frame["objects"]["3"]["confidence"] <= 1
    assert all(entry["reason"] in ("lost", "area change", "low confidence") for entry in review["needs_review"])


def test_an_earlier_runs_results_are_refused_unless_overwrite(frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale-frame.png").write_bytes(b"x")
    mask = _mask(tmp_path / "m.png")
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", out, "--overwrite") == 0
    assert not (out / "stale-frame.png").exists() and len(_written(out)) == N


def test_an_overlay_in_a_file_path_stops_before_work(frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a_file").write_text("x")
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "m.png"), "--out", tmp_path / "out",
                    "--overlay", tmp_path / "a_file" / "o.mp4") == 2
    assert "--overlay" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_frame_of_another_size_stops_before_work(frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("RGB", (W, H + 2)).save(frames / f"{N - 1:05d}.png")
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "m.png"), "--out", tmp_path / "out") == 2
    assert f"{N - 1:05d}.png is 64x50" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("argv, message", [
    (["--start", "4", "--end", "2"], "--start 4 / --end 2"),
    (["--end", "99"], "--end 99"),
    (["--start", "4"], "no mask annotates a frame in 4..5"),
])
def test_bad_ranges(argv: list[str], message: str, frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _segment(tiny_checkpoint, frames, "--mask", _mask(tmp_path / "00001.png"), "--out", tmp_path / "o",
                    *argv) == 2
    assert message in capsys.readouterr().err


def test_a_zero_255_mask_is_drawn_in_a_visible_colour() -> None:
    image = np.full((8, 8, 3), 200, np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 255
    drawn = overlay(image, labels, greyscale_overlay_palette(), contour_width=0)
    red, green, blue = drawn[4, 4].astype(int)
    assert red - green > 50 and red - blue > 50


def test_ctrl_c_keeps_a_playable_overlay_of_the_finished_frames(tmp_path: Path) -> None:
    path = tmp_path / "o.mp4"
    image, labels = np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.uint8)
    with pytest.raises(KeyboardInterrupt), OverlayWriter(path, 24, (H, W)) as writer:
        for _ in range(5):
            writer.write(image, labels)
        raise KeyboardInterrupt
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


@pytest.mark.slow  # test-time adaptation on 120 objects (joint clips of 8): about 20 s
def test_many_objects_need_confirming(frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    labels = (np.arange(H * W) % 120 + 1).astype(np.uint8).reshape(H, W)
    image = Image.fromarray(labels, mode="L")
    image.putpalette(greyscale_overlay_palette())  # an indexed mask of 120 ids
    image.save(tmp_path / "many.png")
    assert _segment(tiny_checkpoint, frames, "--mask", tmp_path / "many.png", "--out", tmp_path / "o",
                    "--end", "1") == 2
    assert "--many-objects" in capsys.readouterr().err
    assert _segment(tiny_checkpoint, frames, "--mask", tmp_path / "many.png", "--out", tmp_path / "o", "--end", "1",
                    "--many-objects") == 0


def test_resume_continues_from_the_first_missing_frame(frames: Path, tmp_path: Path, tiny_checkpoint: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    mask = _mask(tmp_path / "00000.png", 2)
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", tmp_path / "whole") == 0
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", tmp_path / "cut", "--end", "2") == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut").glob("*.png")}
    capsys.readouterr()
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", tmp_path / "cut", "--resume",
                    "--overlay", tmp_path / "o.mp4") == 0
    assert "segmented 3 frames" in capsys.readouterr().out
    whole, resumed = _written(tmp_path / "whole"), _written(tmp_path / "cut")
    assert sorted(resumed) == sorted(whole)
    assert all((tmp_path / "cut" / name).stat().st_mtime_ns == mtime for name, mtime in before.items())
    for name in whole:  # the previous frame is taken hard, not soft: close to the uninterrupted run
        assert (resumed[name] == whole[name]).mean() > 0.9
    with av.open(str(tmp_path / "o.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == N
    assert _segment(tiny_checkpoint, frames, "--mask", mask, "--out", tmp_path / "cut", "--resume", "--overwrite") == 2
