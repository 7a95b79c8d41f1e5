"""Small objects in zoomed windows: the window's geometry, when an object gets one, and how the
predictor merges the window's video into the frame's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emvos.inference import predictor as predictor_module
from emvos.inference.predictor import VideoPredictor, VideoState
from emvos.inference.zoom import (
    DEFAULT_ZOOM,
    MIN_SIDE,
    Window,
    ZoomSettings,
    merge_windows,
    outgrown,
    parse_zoom,
    zoom_settings,
    zoom_window,
)
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

H, W = 48, 80
SIZE = 64  # the window as the network sees it (the tiny network's stride is 16)


@pytest.fixture(scope="module")
def network() -> EMVOS:
    torch.manual_seed(0)
    return EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _boxes(boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    for oid, (y0, y1, x0, x1) in boxes.items():
        mask[y0:y1, x0:x1] = oid
    return mask


# -- the window ---------------------------------------------------------------------------------------------


def test_a_window_crops_and_pastes_back_the_same_pixels() -> None:
    image = torch.zeros(1, H, W)
    image[0, 20:28, 30:38] = 1
    window = Window((24.0, 34.0), 16.0, 64.0)
    crop = window.crop(image, 32, mode="nearest")[0]  # 2x: the square fills the crop's middle half
    assert crop.shape == (32, 32) and crop[8:24, 8:24].all() and crop.sum() == 16 * 16
    (rows, cols), pasted = window.paste(torch.stack([1 - crop, crop]), (H, W))
    assert (rows, cols) == (slice(16, 32), slice(26, 42)) and pasted.shape == (2, 16, 16)
    assert torch.equal(pasted[1] > 0.5, image[0, rows, cols] > 0.5) and torch.allclose(pasted.sum(dim=0), torch.ones(1))


def test_a_window_reaching_outside_the_frame_repeats_its_border_and_pastes_only_inside() -> None:
    image = torch.arange(H * W, dtype=torch.float32).view(1, H, W)
    window = Window((2.0, 3.0), 12.0, 10.0)  # top-left corner 4 pixels above and 3 left of the frame
    crop = window.crop(image, 12, mode="nearest")[0]
    assert torch.equal(crop[:5, :4], torch.zeros(5, 4))  # the frame's corner pixel, repeated
    assert torch.equal(crop[4:, 3], image[0, :8, 0]) and torch.equal(crop[4, 3:], image[0, 0, :9])
    (rows, cols), pasted = window.paste(torch.ones(1, 12, 12), (H, W))
    assert (rows, cols) == (slice(0, 8), slice(0, 9)) and pasted.shape == (1, 8, 9)


def test_a_window_follows_what_it_marks_unless_the_area_leaves_its_range() -> None:
    window = Window((24.0, 40.0), 32.0, 64.0)  # 1 crop pixel = 0.5 frame pixel at size 64
    fg = torch.zeros(64, 64)
    fg[40:56, 40:56] = 1  # 8 x 8 frame pixels (area 64), centred 8 pixels below and right of the window's
    assert window.extent(fg) == 8.0
    window.follow(fg)
    assert window.center == (32.0, 48.0)
    window.follow(torch.zeros(64, 64))  # nothing marked: stays
    leak = torch.ones(64, 64)  # area 1,024 > 3 x 64: stays
    window.follow(leak)
    assert window.center == (32.0, 48.0)


def test_small_objects_get_a_window_of_their_context_and_large_ones_none() -> None:
    settings = ZoomSettings(size=SIZE, context=2.0, small=24)
    mask = np.zeros((H, W), bool)
    mask[10:16, 20:30] = True  # extent 10: a window of 20 -> MIN_SIDE, shown 2x in 64 pixels
    window = zoom_window(mask, settings, work_scale=1.0)
    assert window is not None and window.side == MIN_SIDE and window.center == (13.0, 25.0) and window.area == 60
    assert zoom_window(mask, settings, work_scale=3.0) is None  # 30 pixels in the frame's pass: not small
    # Small (22 pixels in the frame's pass), but its window (32 frame pixels, 70 in the frame's pass) would
    # show it no larger in 64 pixels than the frame's pass does:
    assert zoom_window(mask, settings, work_scale=2.2) is None
    large = np.zeros((H, W), bool)
    large[5:45, 10:50] = True  # extent 40
    assert zoom_window(large, settings, work_scale=1.0) is None
    assert zoom_window(np.zeros((H, W), bool), settings, work_scale=1.0) is None
    full = torch.zeros(SIZE, SIZE)
    full[:, 4:60] = 1  # 32 frame pixels: the whole window's height
    in_frame = torch.zeros(H, W)
    in_frame[10:26, 20:30] = 1  # 16 pixels in the frame's pass: inside the window
    assert not outgrown(window, full, in_frame)  # the window alone: a leak, it stays open
    in_frame[5:45, 10:42] = 1  # 40 pixels, over what the window marks: larger than the window
    assert outgrown(window, full, in_frame)  # the object came closer
    assert not outgrown(window, full[:, :40] * 0, in_frame)  # nothing in the window: not full
    elsewhere = torch.zeros(H, W)
    elsewhere[5:45, 50:80] = 1  # as large, beside the window: not what it marks
    assert not outgrown(window, full, elsewhere)
    wide = torch.zeros(3 * H, 3 * W)
    wide[0:30, 10:40] = 1  # what the window marks, not larger than the window (30 pixels)
    wide[130:140, 200:230] = 1  # and something far away in the frame's pass, stretching its box
    assert not outgrown(window, full, wide)
    wide[30:50, 10:40] = 1  # now the object itself is larger than the window
    assert outgrown(window, full, wide)


def test_a_window_wins_pixels_from_an_unsure_neighbour_and_not_from_a_sure_one() -> None:
    """Objects 1 (the frame's pass) and 2 (a window over columns 2..5): the window's odds against its
    background compete with object 1's against the background the frame's pass leaves."""
    probs = torch.zeros(3, 1, 6)
    probs[1] = torch.tensor([0.6, 0.6, 0.6, 0.95, 0.95, 0.1])  # object 1: unsure on 0..2, sure on 3..4
    probs[2] = torch.tensor([0.3, 0.1, 0.1, 0.05, 0.0, 0.5])  # the frame's pass of object 2: replaced
    probs[0] = 1 - probs[1:].sum(dim=0)
    fg = torch.tensor([[[0.8, 0.3, 0.8, 0.1]]])  # the window's object 2 at columns 2..5 (its neighbours: none)
    merged = merge_windows(probs, [(2, (slice(0, 1), slice(2, 6)), torch.cat([1 - fg, fg]))])
    assert torch.allclose(merged.sum(dim=0), torch.ones(1, 6))
    assert merged.argmax(dim=0).tolist() == [[1, 1, 2, 1, 1, 0]]
    # Column 2: object 1's 0.6 leaves a background of 0.4, against which the window's odds of 4 give 1.6.
    assert torch.allclose(merged[:, 0, 2], torch.tensor([0.4, 0.6, 1.6]) / 2.6)
    assert merged[2, 0, :2].eq(0).all()  # outside its window an object is 0
    # Column 5: the window's odds of 1/9 against a background of 0.9 (object 2's pass share included).
    assert torch.allclose(merged[:, 0, 5], torch.tensor([0.9, 0.1, 0.1]) / 1.1)


def test_a_window_tracks_the_neighbours_it_shows_with_its_object(network: EMVOS) -> None:
    zoomed = VideoPredictor(network, device="cpu", resolution=0, zoom=ZoomSettings(size=SIZE))
    state = zoomed.init_state()
    # Object 5 is small; 6 carries it (inside its window), 7 is beside 6 but outside 5's window.
    zoomed.step(state, _frames(1)[0], _boxes({6: (10, 40, 20, 40), 5: (20, 26, 34, 40), 7: (10, 40, 60, 76)}))
    assert state.zoom[5].state.object_ids == [5, 6]
    for frame in _frames(2, seed=4):
        zoomed.step(state, frame)
        assert state.zoom[5].state.prev is not None and state.zoom[5].state.prev.mask.shape[1] == 2


@pytest.mark.parametrize(("kwargs", "message"), [({"size": 32}, "size must be at least 64"),
                                                 ({"context": 0.5}, "context must be at least 1"),
                                                 ({"small": 0}, "small must be at least 1 pixel")])
def test_zoom_settings_check_their_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZoomSettings(**kwargs)  # type: ignore[arg-type]


def test_zoom_settings_from_the_command_line() -> None:
    assert zoom_settings(None) is DEFAULT_ZOOM and zoom_settings(0) is None and zoom_settings(384) == ZoomSettings(384)
    assert parse_zoom("0") is None and parse_zoom("{}") == DEFAULT_ZOOM
    assert parse_zoom('{"context": 2, "small": 64}') == ZoomSettings(context=2, small=64)
    with pytest.raises(ValueError, match="name sise, which this emvos does not know"):
        parse_zoom('{"sise": 3}')
    with pytest.raises(ValueError, match="must be 0 or a JSON object"):
        parse_zoom("320")


# -- the predictor ------------------------------------------------------------------------------------------


def test_the_window_must_be_a_multiple_of_the_stride(network: EMVOS) -> None:
    with pytest.raises(ValueError, match="^zoom the window's size must be a multiple of the network's stride 16"):
        VideoPredictor(network, device="cpu", resolution=0, zoom=ZoomSettings(size=72))


def test_a_zoomed_object_is_what_its_window_marks_pasted_back(network: EMVOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small object's labels are its window's prediction resized back into the frame (nothing outside
    the window), and the window moves to what it marked."""
    pattern = torch.zeros(SIZE, SIZE)
    pattern[8:24, 20:52] = 1  # what every window marks, in its own pixels: off-centre and not symmetric
    frame_pass = VideoPredictor._predict

    def predict(self: VideoPredictor, state: VideoState, query: object, prev: object) -> torch.Tensor | None:
        if state.geometry is not None and state.geometry.size == (SIZE, SIZE):  # a window (frames: 48 x 80)
            return torch.stack([1 - pattern, pattern])[None]
        return frame_pass(self, state, query, prev)  # type: ignore[arg-type]

    monkeypatch.setattr(VideoPredictor, "_predict", predict)
    zoomed = VideoPredictor(network, device="cpu", resolution=0, zoom=ZoomSettings(size=SIZE))
    state = zoomed.init_state()
    zoomed.step(state, _frames(1)[0], _boxes({6: (20, 27, 30, 37)}))
    window = state.zoom[6].window
    assert window == Window((23.5, 33.5), MIN_SIDE, 49.0)
    for frame in _frames(3, seed=1):
        before = Window(window.center, window.side, window.area)
        labels = zoomed.step(state, frame).labels
        (rows, cols), pasted = before.paste(pattern[None], (H, W))
        expected = np.zeros((H, W), bool)
        expected[rows, cols] = (pasted[0] > 0.5).numpy()
        np.testing.assert_array_equal(labels == 6, expected)
        top, left = before.center[0] - 16, before.center[1] - 16  # 1 window pixel: half a frame pixel
        assert window.center == (top + 8, left + 18)  # the centre of rows 8..23 and columns 20..51


def test_large_objects_and_closed_windows_keep_the_frames_pass(network: EMVOS, monkeypatch: pytest.MonkeyPatch) -> None:
    zoomed = VideoPredictor(network, device="cpu", resolution=0, zoom=ZoomSettings(size=SIZE, small=24))
    plain = VideoPredictor(network, device="cpu", resolution=0)
    frames = _frames(4, seed=2)
    first = _boxes({1: (4, 44, 4, 44), 2: (20, 26, 56, 62)})
    state, reference = zoomed.init_state(), plain.init_state()
    zoomed.step(state, frames[0], first)
    plain.step(reference, frames[0], first)
    assert list(state.zoom) == [2]  # the large object has no window
    monkeypatch.setattr(predictor_module, "outgrown", lambda *args: True)  # object 2 outgrew its window
    for frame in frames[1:]:
        np.testing.assert_array_equal(zoomed.step(state, frame).labels, plain.step(reference, frame).labels)
    assert not state.zoom


def test_windows_are_given_again_with_their_objects_and_survive_a_resume(network: EMVOS) -> None:
    zoomed = VideoPredictor(network, device="cpu", resolution=0, zoom=ZoomSettings(size=SIZE))
    frames = _frames(4, seed=3)
    state = zoomed.init_state(probabilities=True)
    zoomed.step(state, frames[0], _boxes({3: (10, 16, 10, 16)}))
    first_window = state.zoom[3]
    zoomed.step(state, frames[1], _boxes({3: (30, 36, 60, 66), 4: (2, 8, 2, 8)}))  # object 3 again, 4 new
    assert sorted(state.zoom) == [3, 4] and state.zoom[3] is not first_window
    assert state.zoom[3].window.center == (33.0, 63.0)
    labels = _boxes({3: (32, 38, 58, 64), 4: (2, 8, 2, 8)})
    zoomed.set_previous(state, frames[2], labels)  # resuming: windows move to the labels' objects
    assert state.zoom[3].window.center == (35.0, 61.0)
    prediction = zoomed.step(state, frames[3])
    probabilities = prediction.probabilities
    assert probabilities is not None and probabilities.shape == (2, H, W)
    for slot, object_id in enumerate((3, 4)):  # each pixel's object is its most probable (up to rounding)
        pixels = prediction.labels == object_id
        assert (probabilities[slot][pixels].astype(int) >= probabilities.max(axis=0)[pixels] - 1).all()
