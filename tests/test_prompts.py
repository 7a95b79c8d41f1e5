"""A first mask from a box or clicks: the API (``emvos.prompts``) and ``segment --box/--click``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emvos.cli import main
from emvos.prompts import Click, next_click, parse_box, parse_click, prompt_mask

H, W = 64, 96


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy blue background with a noisy orange ellipse: ``(H, W, 3)`` image and ``(H, W)`` truth."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:H, :W]
    truth = ((rows - 30) / 16.0) ** 2 + ((cols - 50) / 24.0) ** 2 <= 1
    image = np.where(truth[..., None], [230, 140, 40], [40, 70, 200]) + rng.normal(0, 12, (H, W, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_box_gives_the_object_inside_it() -> None:
    image, truth = _scene()
    mask = prompt_mask(image, (24, 12, 77, 49))
    assert mask.shape == (H, W) and mask.dtype == bool
    assert _iou(mask, truth) > 0.9


def test_clicks_give_the_object_and_a_negative_click_removes_a_region() -> None:
    image, truth = _scene()
    mask = prompt_mask(image, clicks=[Click(50, 30)])  # the shipped model's encoder
    assert mask[30, 50] and _iou(mask, truth) > 0.5
    boxed = prompt_mask(image, (10, 5, 90, 60), [Click(50, 30), Click(15, 10, positive=False)])
    assert not boxed[10, 15] and boxed[30, 50]


def test_the_evaluation_protocol_clicks_into_the_largest_error() -> None:
    _, truth = _scene()
    first = next_click(truth, None)
    assert first.positive and truth[int(first.y), int(first.x)]
    too_much = np.ones_like(truth)
    assert not next_click(truth, too_much).positive


@pytest.mark.parametrize("bad", [{}, {"clicks": [Click(5, 5, positive=False)]}, {"box": (3, 3, 4, 4)},
                                 {"clicks": [Click(W, 2)]}])
def test_prompts_that_cannot_work_are_value_errors(bad: dict) -> None:
    image, _ = _scene()
    with pytest.raises(ValueError):
        prompt_mask(image, **bad)


def test_parsing() -> None:
    assert parse_box("1,2,30,40") == (1, 2, 30, 40)
    assert parse_click("3,4") == Click(3, 4, True) and parse_click("3,4,-") == Click(3, 4, False)
    for text in ("1,2,3", "a,b,c,d"):
        with pytest.raises(ValueError, match="x0,y0,x1,y1"):
            parse_box(text)
    with pytest.raises(ValueError, match="x,y"):
        parse_click("3,4,?")


def _frames(root: Path, n: int = 3) -> Path:
    folder = root / "frames"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(_scene(i)[0]).save(folder / f"{i:05d}.png")
    return folder


def test_segment_from_a_box_at_a_later_frame(tmp_path: Path, tiny_checkpoint: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    frames = _frames(tmp_path)
    out = tmp_path / "out"
    code = main(["segment", str(frames), "--box", "24,12,77,49", "--frame", "1", "--object", "3", "--out", str(out),
                 "--checkpoint", str(tiny_checkpoint), "--quiet", "--threads", "1"])
    assert code == 0
    assert "-> object 3" in capsys.readouterr().out
    given = np.array(Image.open(out / "00001.png"))
    assert _iou(given == 3, _scene(1)[1]) > 0.9
    assert not np.array(Image.open(out / "00000.png")).any()  # before the prompted frame: nothing yet


@pytest.mark.parametrize("argv, message", [
    (["--box", "0,0,500,40"], "inside the 96x64 frame"),
    (["--click", "5,5,-"], "only background points"),
    (["--click", "5,5", "--frame", "7"], "--frame 7"),
    ([], "--mask, or point at one object with --box/--click"),
])
def test_bad_prompts_stop_before_work(argv: list[str], message: str, tmp_path: Path, tiny_checkpoint: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    frames = _frames(tmp_path)
    code = main(["segment", str(frames), "--out", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint),
                 "--quiet", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
