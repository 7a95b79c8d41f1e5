"""Writing label PNGs and overlay videos: exact round-trips, atomicity and the overlay drawing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.io import DAVIS_PALETTE, LabelWriter, OverlayWriter, open_frames, overlay, read_mask, writers


class _Stop(Exception):
    """Stands for a failure of the caller in the middle of a run."""


def _writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if "-writer" in thread.name]


def _labels(height: int = 48, width: int = 64, shift: int = 0) -> np.ndarray:
    """``(H, W) uint8`` labels with objects 1, 7 and 255 as rectangles (the last at the border)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[4:20, 4 + shift : 24 + shift] = 1
    labels[24:40, 30:50] = 7
    labels[height - 6 :, width - 6 :] = 255
    return labels


def _image(height: int = 48, width: int = 64) -> np.ndarray:
    ramp = np.linspace(20, 220, width, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".tmp" in path.name)


def test_palette_labels_round_trip_exactly(tmp_path: Path) -> None:
    palette = [(5 * value + 1) % 256 for value in range(768)]
    frames = [_labels(shift=shift) for shift in range(3)]
    with LabelWriter(tmp_path / "out", palette, "P") as writer:
        for index, labels in enumerate(frames):
            writer.write(f"{index:05d}", labels)

    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
    for index, labels in enumerate(frames):
        mask = read_mask(tmp_path / "out" / f"{index:05d}.png")
        assert (mask.mode, mask.palette) == ("P", palette)
        np.testing.assert_array_equal(mask.labels, labels)
    assert _writer_threads() == []


@pytest.mark.parametrize("threads", [1, 3])
def test_every_frame_is_written_whole_by_one_or_several_threads(tmp_path: Path, threads: int) -> None:
    frames = [_labels(shift=shift) for shift in range(12)]
    with LabelWriter(tmp_path, threads=threads, queue_depth=2) as writer:
        assert len(_writer_threads()) == threads
        for index, labels in enumerate(frames):
            writer.write(f"{index:05d}", labels)

    assert _leftovers(tmp_path) == [] and _writer_threads() == []
    for index, labels in enumerate(frames):
        np.testing.assert_array_equal(read_mask(tmp_path / f"{index:05d}.png").labels, labels)


def test_greyscale_labels_round_trip_exactly(tmp_path: Path) -> None:
    labels = _labels()
    with LabelWriter(tmp_path, None, "L") as writer:
        writer.write("frame", labels)

    mask = read_mask(tmp_path / "frame.png")
    assert (mask.mode, mask.palette) == ("L", None)
    np.testing.assert_array_equal(mask.labels, labels)


def test_short_palette_is_completed_with_davis_colours(tmp_path: Path) -> None:
    with LabelWriter(tmp_path, [10, 20, 30, 40, 50, 60]) as writer:
        writer.write("a", _labels())

    assert read_mask(tmp_path / "a.png").palette == [10, 20, 30, 40, 50, 60] + DAVIS_PALETTE[6:]


def test_the_caller_may_reuse_its_array(tmp_path: Path) -> None:
    labels = _labels()
    expected = labels.copy()
    with LabelWriter(tmp_path) as writer:
        writer.write("a", labels)
        labels[:] = 0

    np.testing.assert_array_equal(read_mask(tmp_path / "a.png").labels, expected)


def test_output_folder_is_created_and_must_not_be_a_file(tmp_path: Path) -> None:
    with LabelWriter(tmp_path / "new" / "nested"):
        pass
    assert (tmp_path / "new" / "nested").is_dir()

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(EmvosInputError, match="taken.*is a file"):
        LabelWriter(tmp_path / "taken")


def test_exception_in_the_block_keeps_finished_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(_Stop), LabelWriter(tmp_path) as writer:
        for index in range(6):
            writer.write(f"{index:05d}", _labels(shift=index))
        raise _Stop

    assert _leftovers(tmp_path) == []
    for path in tmp_path.iterdir():
        assert path.suffix == ".png"
        assert read_mask(path).size == (48, 64), f"{path.name} is not a complete PNG"
    assert _writer_threads() == []


def test_write_error_in_the_thread_reaches_the_caller(tmp_path: Path) -> None:
    (tmp_path / "00001.png").mkdir()  # the PNG cannot replace a folder
    with pytest.raises(EmvosInputError, match=r"00001\.png.*cannot write"), LabelWriter(tmp_path) as writer:
        for index in range(4):
            writer.write(f"{index:05d}", _labels())

    assert _leftovers(tmp_path) == []
    assert _writer_threads() == []


def test_write_checks_its_arguments(tmp_path: Path) -> None:
    with LabelWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write("a", _labels().astype(np.int64))
        with pytest.raises(ValueError, match="stem"):
            writer.write("../a", _labels())


def test_overlay_blends_objects_and_draws_contours() -> None:
    image, labels = _image(), _labels()
    original = image.copy()

    drawn = overlay(image, labels, DAVIS_PALETTE)

    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(image, original)
    background = labels == 0
    np.testing.assert_array_equal(drawn[background], image[background])
    inside = (10, 12)  # well inside object 1, away from its contour
    expected = np.rint(0.5 * image[inside] + 0.5 * np.array([128, 0, 0])).astype(np.uint8)
    np.testing.assert_array_equal(drawn[inside], expected)
    np.testing.assert_array_equal(drawn[4, 12], [128, 0, 0])  # contour in the object's colour
    np.testing.assert_array_equal(drawn[5, 12], [128, 0, 0])  # 2 px wide
    np.testing.assert_array_equal(drawn[6, 12], expected)
    # Object 255 touches the image border, which is not a contour.
    np.testing.assert_array_equal(
        drawn[-1, -1], np.rint(0.5 * image[-1, -1] + 0.5 * np.array([224, 224, 192]))
    )


def _overlay_by_definition(image: np.ndarray, labels: np.ndarray, alpha: float, width: int) -> np.ndarray:
    """Every object pixel blended with its colour; object pixels with another label within ``width``
    (square window, the image border not counting) in the solid colour."""
    colours = np.array(DAVIS_PALETTE + [0] * (768 - len(DAVIS_PALETTE)), dtype=np.float64).reshape(256, 3)
    result = image.copy()
    objects = labels > 0
    result[objects] = np.clip(np.rint((1 - alpha) * image[objects] + alpha * colours[labels[objects]]), 0, 255)
    height, image_width = labels.shape
    for y, x in zip(*np.nonzero(objects), strict=True):
        window = labels[max(0, y - width):min(height, y + width + 1), max(0, x - width):min(image_width, x + width + 1)]
        if (window != labels[y, x]).any():
            result[y, x] = colours[labels[y, x]]
    return result


@pytest.mark.parametrize("alpha,width", [(0.5, 2), (0.3, 1), (0.5, 0)])
@pytest.mark.parametrize("layout", ["objects", "touching-borders", "empty"])
def test_overlay_matches_its_definition(alpha: float, width: int, layout: str) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    labels = np.zeros((40, 52), dtype=np.uint8)
    if layout == "objects":
        labels[8:20, 10:30], labels[15:30, 25:40], labels[33, 5] = 1, 2, 7
    elif layout == "touching-borders":
        labels[:12, :9], labels[30:, 40:], labels[20:24, :] = 3, 255, 1
    np.testing.assert_array_equal(overlay(image, labels, alpha=alpha, contour_width=width),
                                  _overlay_by_definition(image, labels, alpha, width))


@pytest.mark.parametrize("fallback", [False, True], ids=["best-codec", "mpeg4-fallback"])
def test_overlay_video_is_readable_with_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    if fallback:
        monkeypatch.setattr(writers, "video_codec", lambda: "mpeg4")
    path = tmp_path / "videos" / "overlay.mp4"
    with OverlayWriter(path, fps=12.0, size=(48, 64)) as writer:
        assert writer.codec == "mpeg4" if fallback else writer.codec in ("libx264", "mpeg4")
        for shift in range(7):
            writer.write(_image(), _labels(shift=shift))

    source = open_frames(path)
    assert (len(source), source.size, source.fps) == (7, (48, 64), 12.0)
    assert len(list(source)) == 7
    assert _leftovers(path.parent) == []
    assert _writer_threads() == []


def test_overlay_video_with_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with OverlayWriter(path, fps=24.0, size=(47, 63)) as writer:
        for _ in range(3):
            writer.write(_image(47, 63), _labels(47, 63))

    source = open_frames(path)
    assert (len(source), source.size) == (3, (48, 64))


def test_overlay_video_is_discarded_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    with pytest.raises(_Stop), OverlayWriter(path, fps=24.0, size=(48, 64)) as writer:
        writer.write(_image(), _labels())
        raise _Stop

    assert list(tmp_path.iterdir()) == []
    assert _writer_threads() == []


def test_overlay_writer_path_errors(tmp_path: Path) -> None:
    with pytest.raises(EmvosInputError, match=r"overlay\.avi.*\.mp4"):
        OverlayWriter(tmp_path / "overlay.avi", fps=24.0, size=(48, 64))
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(EmvosInputError, match=r"folder\.mp4.*is a folder"):
        OverlayWriter(tmp_path / "folder.mp4", fps=24.0, size=(48, 64))
    (tmp_path / "file").write_text("a file")
    with pytest.raises(EmvosInputError, match="file.*is a file"):
        OverlayWriter(tmp_path / "file" / "overlay.mp4", fps=24.0, size=(48, 64))


def test_label_pngs_and_overlay_of_the_davis_sample(davis2017_sample_root: Path, tmp_path: Path) -> None:
    frames = open_frames(davis2017_sample_root / "JPEGImages" / "480p" / "schoolgirls", prefetch=2)
    mask = read_mask(davis2017_sample_root / "Annotations" / "480p" / "schoolgirls" / "00000.png")

    with (
        LabelWriter(tmp_path / "labels", mask.palette, mask.mode) as labels,
        OverlayWriter(tmp_path / "overlay.mp4", frames.fps, frames.size, palette=mask.palette) as video,
    ):
        for frame in frames:
            if frame.index == 5:
                break
            labels.write(frame.name, mask.labels)
            video.write(frame.image, mask.labels)

    assert sorted(path.stem for path in (tmp_path / "labels").iterdir()) == frames.names[:5]
    written = Image.open(tmp_path / "labels" / "00004.png")
    assert written.getpalette() == mask.palette
    np.testing.assert_array_equal(np.array(written), mask.labels)
    assert len(open_frames(tmp_path / "overlay.mp4")) == 5
