"""Reading frames: folders in natural order, videos through PyAV, streaming and every input error."""

from __future__ import annotations

import gc
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.io import FOLDER_FPS, natural_sort_key, open_frames
from emvos.io.frame_range import FrameRange


def _decode_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("emvos-decode")]


def _image(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth ``(H, W, 3) uint8`` test image that differs per index (survives lossy coding)."""
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    image = np.broadcast_to(ramp, (height, width, 3)) + 10 * index
    return image.astype(np.uint8)


def _write_png_frames(folder: Path, names: list[str]) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = [_image(index) for index in range(len(names))]
    for name, image in zip(names, images, strict=True):
        Image.fromarray(image).save(folder / name)
    return images


def _write_mp4(
    path: Path, count: int, fps: Fraction = Fraction(25), rotation: int = 0, height: int = 48, width: int = 64
) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(_image(index, height, width), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / fps
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_natural_sort_orders_numbers_by_value_and_ignores_case() -> None:
    names = ["f10.jpg", "f2.jpg", "F1.jpg", "f2b.jpg", "f02a.jpg", "g.jpg"]
    assert sorted(names, key=natural_sort_key) == [
        "F1.jpg",
        "f2.jpg",
        "f02a.jpg",
        "f2b.jpg",
        "f10.jpg",
        "g.jpg",
    ]


def test_folder_round_trip(tmp_path: Path) -> None:
    images = _write_png_frames(tmp_path, ["f10.png", "f2.PNG", "f1.png"])
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "._f3.png").write_bytes(b"macOS resource fork, not a frame")

    source = open_frames(tmp_path)

    assert source.names == ["f1", "f2", "f10"]
    assert len(source) == 3
    assert source.size == (48, 64)
    assert source.fps == FOLDER_FPS
    frames = list(source)
    assert [(frame.index, frame.name) for frame in frames] == [(0, "f1"), (1, "f2"), (2, "f10")]
    for frame, expected in zip(frames, [images[2], images[1], images[0]], strict=True):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64, 3)
        np.testing.assert_array_equal(frame.image, expected)
    assert [frame.name for frame in source] == source.names, "a second iteration starts again"


def test_greyscale_frames_become_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 10), 77, np.uint8)).save(tmp_path / "0.jpg", quality=100)

    (frame,) = list(open_frames(tmp_path))

    assert frame.image.shape == (8, 10, 3)
    assert abs(int(frame.image.mean()) - 77) <= 1


def test_mp4_round_trip(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _write_mp4(video, count=5, fps=Fraction(30000, 1001))

    source = open_frames(video)

    assert source.size == (48, 64)
    assert source.fps == pytest.approx(29.97, abs=0.01)
    assert len(source) == 5
    assert source.names == ["00000", "00001", "00002", "00003", "00004"]
    frames = list(source)
    assert [frame.name for frame in frames] == source.names
    assert [frame.index for frame in frames] == list(range(5))
    for index, frame in enumerate(frames):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64, 3)
        error = np.abs(frame.image.astype(int) - _image(index).astype(int)).mean()
        assert error < 6, f"frame {index} decoded far from what was encoded (mean error {error:.1f})"


def test_video_display_rotation_is_applied(tmp_path: Path) -> None:
    video = tmp_path / "portrait.mp4"
    _write_mp4(video, count=2, rotation=90)  # stored 64 wide, shown turned a quarter counter-clockwise

    source = open_frames(video)
    image = next(iter(source)).image

    assert source.size == (64, 48) and image.shape == (64, 48, 3)
    # The stored frame is dark on the left; turned counter-clockwise, its left edge is at the bottom.
    assert image[-8:].mean() < image[:8].mean()


def test_stopping_early_stops_the_decoding_thread(tmp_path: Path) -> None:
    _write_png_frames(tmp_path, [f"{index}.png" for index in range(12)])
    source = open_frames(tmp_path, prefetch=2)

    for frame in source:
        if frame.index == 1:
            break
    gc.collect()
    assert _decode_threads() == []

    frames = iter(source)
    next(frames)
    assert _decode_threads(), "decoding runs ahead on a background thread"
    frames.close()
    assert _decode_threads() == []

    frames = iter(source)
    next(frames)
    del frames  # dropped without close(): garbage collection must stop the thread too
    gc.collect()
    assert _decode_threads() == []


def test_decode_error_is_raised_in_the_consumer_after_the_good_frames(tmp_path: Path) -> None:
    _write_png_frames(tmp_path, ["0.png", "1.png", "3.png"])
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    source = open_frames(tmp_path)

    seen = []
    with pytest.raises(EmvosInputError, match=r"2\.png.*cannot decode"):
        for frame in source:
            seen.append(frame.name)
    assert seen == ["0", "1"]
    assert _decode_threads() == []


def test_size_change_names_the_frame(tmp_path: Path) -> None:
    _write_png_frames(tmp_path, ["0.png", "1.png"])
    Image.fromarray(_image(2, height=40)).save(tmp_path / "2.png")

    with pytest.raises(EmvosInputError, match=r"2\.png.*64x40.*64x48"):
        list(open_frames(tmp_path))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(EmvosInputError, match="nowhere.*no such file or folder"):
        open_frames(tmp_path / "nowhere")


def test_folder_without_frames(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(EmvosInputError, match=f"{tmp_path.name}.*no frames"):
        open_frames(tmp_path)


def test_undecodable_first_frame_fails_when_opening(tmp_path: Path) -> None:
    (tmp_path / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(EmvosInputError, match=r"00000\.jpg.*cannot decode"):
        open_frames(tmp_path)


def test_two_frames_with_one_name(tmp_path: Path) -> None:
    _write_png_frames(tmp_path, ["00000.png", "00000.jpg"])
    with pytest.raises(EmvosInputError, match="00000.*same name"):
        open_frames(tmp_path)


@pytest.mark.parametrize("name", ["clip.gif", "frames.txt", "noext"])
def test_unsupported_file_type(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"data")
    with pytest.raises(EmvosInputError, match=f"{name}.*unsupported file type"):
        open_frames(tmp_path / name)


def test_single_image_is_not_a_video(tmp_path: Path) -> None:
    _write_png_frames(tmp_path, ["only.png"])
    with pytest.raises(EmvosInputError, match=r"only\.png.*single image.*folder"):
        open_frames(tmp_path / "only.png")


def test_undecodable_video(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(EmvosInputError, match=r"broken\.mp4.*cannot decode.*ffmpeg"):
        open_frames(tmp_path / "broken.mp4")


def test_video_without_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        samples = np.zeros((1, 1024), dtype=np.float32)
        for index in range(3):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)

    with pytest.raises(EmvosInputError, match=r"sound\.mp4.*no video stream"):
        open_frames(path)


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_a_frame_range_streams_forward_and_is_indexed_backward(tmp_path: Path, kind: str) -> None:
    if kind == "folder":
        _write_png_frames(tmp_path / "frames", [f"{i:05d}.png" for i in range(6)])
        source = open_frames(tmp_path / "frames")
    else:
        _write_mp4(tmp_path / "clip.mp4", count=6)
        source = open_frames(tmp_path / "clip.mp4")
    clip = FrameRange(source, 1, 4)
    assert len(clip) == 4
    streamed = list(clip)
    assert [clip.take(i).index for i in range(4)] == [1, 2, 3, 4]
    backward = [clip[i] for i in range(3, -1, -1)]
    taken = [clip.take(i) for i in range(3, -1, -1)]
    assert [frame.name for frame in taken] == ["00004", "00003", "00002", "00001"]
    for image, frame, same in zip(backward, taken, streamed[::-1], strict=True):
        assert image is frame.image and np.array_equal(image, same)
    with pytest.raises(IndexError):
        clip[4]
    with pytest.raises(KeyError):
        clip.take(0)  # handed out once, taken once
