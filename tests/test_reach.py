"""Each object looked for near where it was (``reach``): its box on the matching grid, the gate on
its probabilities, and the predictor and command line that use them."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from emvos.inference.aggregate import aggregate
from emvos.inference.predictor import VideoPredictor
from emvos.inference.reach import LOST_PEAK, reach_boxes, within_reach
from emvos.inference.settings import DEFAULT_REACH
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

H, W = 96, 160  # a 6 x 10 grid of the tiny network's stride-16 cells


def _cells(*boxes: tuple[int, int, int, int], value: float = 1.0, grid: tuple[int, int] = (12, 20)) -> torch.Tensor:
    """``(O, h, w)`` foreground maps, one object per ``(y0, y1, x0, x1)`` box of cells."""
    fg = torch.zeros(len(boxes), *grid)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        fg[i, y0:y1, x0:x1] = value
    return fg


def _box(rows: torch.Tensor, cols: torch.Tensor) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of one object's box, checking that its rows and columns are contiguous."""
    ys, xs = rows.nonzero()[:, 0], cols.nonzero()[:, 0]
    assert len(ys) == int(ys.max() - ys.min()) + 1 and len(xs) == int(xs.max() - xs.min()) + 1
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def test_a_box_grows_by_reach_times_its_longer_side_and_one_cell() -> None:
    rows, cols = reach_boxes(_cells((4, 8, 8, 10)), reach=0.25)  # 4 x 2 cells: ceil(0.25 * 4) + 1 = 2 more a side
    assert _box(rows[0], cols[0]) == (2, 10, 6, 12)
    rows, cols = reach_boxes(_cells((4, 8, 8, 10)), reach=1.0)  # 4 + 1 = 5 a side, cut at the grid's edges
    assert _box(rows[0], cols[0]) == (0, 12, 3, 15)


def test_faint_cells_do_not_stretch_a_box_but_a_small_object_has_one() -> None:
    fg = _cells((5, 6, 5, 6), value=0.3)  # a sub-cell object: its peak is 0.3
    fg[0, 0, 19] = 0.1  # a faint leftover far away
    rows, cols = reach_boxes(fg, reach=0.25)
    assert _box(rows[0], cols[0]) == (3, 8, 3, 8)


def test_a_lost_object_is_looked_for_everywhere() -> None:
    fg = _cells((2, 4, 2, 4), (0, 0, 0, 0))
    fg[1] = LOST_PEAK / 2
    rows, cols = reach_boxes(fg, reach=0.25)
    assert rows[1].all() and cols[1].all() and not cols[0].all()


def test_within_reach_keeps_a_distribution_and_drops_the_far_look_alike() -> None:
    grid = (6, 10)
    prev_fg = _cells((1, 3, 1, 3), (1, 3, 6, 8), grid=grid)  # two objects, left and right
    prev_mask = torch.stack([1 - prev_fg, prev_fg], dim=1).flatten(2)  # (O, 2, h * w)
    probs = torch.full((2, 2, 96, 160), 0.5)
    probs[:, 1] = 0.9  # both objects claim the whole frame
    probs[:, 0] = 0.1
    kept = within_reach(probs.clone(), prev_mask, grid, reach=0.25)
    assert torch.allclose(kept.sum(dim=1), torch.ones(2, 96, 160))
    # object 1's box: cells 1..2 grown by ceil(0.5) + 1 = 2 cells -> rows 0..4, columns 0..4
    assert kept[0, 1, :80, :80].eq(0.9).all() and kept[0, 1, :, 80:].eq(0).all() and kept[0, 1, 80:].eq(0).all()
    assert kept[1, 1, :80, 64:].eq(0.9).all() and kept[1, 1, :, :64].eq(0).all()
    labels = aggregate(kept).argmax(dim=0)
    assert (labels[:80, :64] == 1).all() and (labels[:80, 80:] == 2).all() and (labels[80:] == 0).all()


@pytest.fixture(scope="module")
def network() -> EMVOS:
    torch.manual_seed(0)
    return EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def test_the_predictor_marks_an_object_only_near_its_last_box(network: EMVOS) -> None:
    given = np.zeros((H, W), np.uint8)
    given[16:48, 16:48] = 1  # 2 x 2 cells: its box grows by 2 cells a side, to pixels 0..80
    frames = _frames(3)
    labels = {}
    for reach in (None, 0.25):
        predictor = VideoPredictor(network, device="cpu", resolution=0, reach=reach)
        state = predictor.init_state()
        predictor.step(state, frames[0], given)
        labels[reach] = predictor.step(state, frames[1]).labels
    # the random network marks object 1 far from where it was; within reach, only near it
    assert (labels[None][:, 80:] == 1).any()
    assert not (labels[0.25][:, 80:] == 1).any() and not (labels[0.25][80:] == 1).any()
    assert np.array_equal(labels[0.25][:80, :80], labels[None][:80, :80])


@pytest.mark.parametrize("reach", [0.0, -1.0, float("nan"), float("inf")])
def test_reach_must_be_a_positive_number(network: EMVOS, reach: float) -> None:
    with pytest.raises(ValueError, match="^reach must be a positive share"):
        VideoPredictor(network, device="cpu", reach=reach)


def test_shipped_defaults_reach_and_the_constructor_looks_everywhere(network: EMVOS) -> None:
    assert VideoPredictor(network, device="cpu").reach is None
    assert inspect.signature(VideoPredictor.from_checkpoint).parameters["reach"].default == DEFAULT_REACH
