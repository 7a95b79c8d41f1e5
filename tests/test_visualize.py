"""``emvos visualize``: score maps of SM / BM / EM (Figure 4) end to end, bad inputs, the Figure-1 toy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emvos.cli import main
from emvos.data.synthetic import DistractorSettings, write_distractor_benchmark
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS
from emvos.visualize import (
    MATCHERS,
    matching_score_maps,
    render_matching_figure,
    render_toy_figure,
    toy_case,
    toy_scores,
)
from emvos.visualize.canvas import GAP, TITLE_HEIGHT, panel_size, row_size
from emvos.visualize.toy import QUERY_NAMES

SIZE = (64, 96)  # (H, W), multiples of the stride: --resolution 0 keeps it


def _checkpoint(root: Path, branches: tuple[str, ...]) -> Path:
    torch.manual_seed(0)
    path = root / f"tiny-{'+'.join(branches)}.pt"
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test", branches=branches), encoder_weights=None))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5-frame distractor video with its first mask, and tiny sm+em and em checkpoints."""
    root = tmp_path_factory.mktemp("visualize")
    write_distractor_benchmark(root / "bench", videos=1, length=5, settings=DistractorSettings.from_difficulty(0.5),
                               seed=0, size=SIZE)
    return {"frames": root / "bench" / "JPEGImages" / "480p" / "dist-0000",
            "mask": root / "bench" / "Annotations" / "480p" / "dist-0000" / "00000.png",
            "sm+em": _checkpoint(root, ("sm", "em")), "em": _checkpoint(root, ("em",))}


def _visualize(files: dict[str, Path], out: Path, *extra: object, checkpoint: str = "sm+em") -> int:
    return main(["visualize", "matching", str(files["frames"]), "--mask", str(files["mask"]), "--frame", "3",
                 "--checkpoint", str(files[checkpoint]), "--device", "cpu", "--resolution", "0", "--out", str(out),
                 *map(str, extra)])


def _panels(figure: np.ndarray, count: int) -> list[np.ndarray]:
    width, height = panel_size(SIZE)
    return [figure[TITLE_HEIGHT:TITLE_HEIGHT + height, GAP + i * (width + GAP):GAP + i * (width + GAP) + width]
            for i in range(count)]


def test_matching_figure_end_to_end(files: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figs" / "matching.png"
    assert _visualize(files, out, "--reference", 1, "--object", 2, "--kernel-k", 4, "--topk-k", 8) == 0
    assert "frame 3 against frame 1" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == row_size(2 + len(MATCHERS), panel_size(SIZE))
        figure = np.asarray(image)
    assert all(panel.std() > 1 for panel in _panels(figure, 6))  # every panel holds a picture
    assert (figure[:, :GAP] == 255).all()  # white margin left of the first panel


def test_a_model_without_sm_gets_grey_sm_and_bm_panels(files: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "em.png"
    assert _visualize(files, out, checkpoint="em") == 0
    assert "no sm, bm-kernel, bm-topk" in capsys.readouterr().out
    panels = _panels(np.asarray(Image.open(out)), 6)
    grey = np.array([200, 200, 200])
    assert all((panel == grey).all(axis=2).mean() > 0.9 for panel in panels[2:5])
    assert (panels[5] == grey).all(axis=2).mean() < 0.1


def test_score_maps() -> None:
    torch.manual_seed(1)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None).eval()
    rng = np.random.default_rng(0)
    reference, query = (rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(2))
    mask = np.zeros(SIZE, bool)
    mask[16:40, 20:60] = True
    scores = matching_score_maps(model, reference, mask, query, kernel_k=2.0, topk_k=4, resolution=0)
    maps = scores.maps
    assert list(maps) == list(MATCHERS) and all(m.shape == SIZE and m.dtype == np.float32 for m in maps.values())
    for matcher in MATCHERS:
        assert maps[matcher].min() >= 0 and maps[matcher].max() <= 1 + 1e-6
    # Bijective filters only lower surjective scores, and they do lower some.
    for matcher in ("bm-kernel", "bm-topk"):
        assert (maps[matcher] <= maps["sm"] + 1e-5).all() and (maps[matcher] < maps["sm"] - 1e-3).any()
    assert scores.title("bm-topk") == "BM top-K (K=4)" and scores.title("bm-kernel") == "BM kernel (K=2)"
    figure = render_matching_figure(reference, mask, query, scores, reference_index=0, query_index=7)
    assert figure.size == row_size(6, panel_size(SIZE))
    with pytest.raises(ValueError, match="differ in size"):
        matching_score_maps(model, reference, mask[:32], query)


@pytest.mark.parametrize(("args", "message"), [
    (["--frame", "9"], "has 5 frames (0..4); frame 9 does not exist"),
    (["--frame", "-1"], "is negative"),
    (["--object", "7"], "has no object 7"),
    (["--out", "{tmp}/figure.jpg"], "path ending in .png"),
    (["--kernel-k", "0"], "--kernel-k must be > 0"),
    (["--topk-k", "0"], "--topk-k >= 1"),
    (["--resolution", "-2"], "--resolution must be 0"),
    (["--mask", "{tmp}/small.png"], "but the frames are 96x64"),
    (["--mask", "{tmp}/missing.png"], "no such mask file"),
    (["--checkpoint", "{tmp}/missing.pt"], "checkpoint not found"),
])
def test_bad_input_one_line_exit_2(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    small = np.zeros((32, 48), np.uint8)
    small[4:20, 4:20] = 1
    Image.fromarray(small).save(tmp_path / "small.png")
    assert _visualize(files, tmp_path / "fig.png", *[a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emvos: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "fig.png").exists()


def test_missing_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["visualize", "matching", str(tmp_path / "nowhere"), "--mask", str(tmp_path / "m.png"), "--frame", "1",
                 "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emvos: error: ") and err.count("\n") == 1


def test_toy_reproduces_the_matching_test_case() -> None:
    """The toy is tests/test_matching.py's distractor case: SM passes the distractor, EM suppresses it."""
    scores = toy_scores(toy_case())
    t, d = QUERY_NAMES.index("T"), QUERY_NAMES.index("D")
    sm, em = scores["sm"], scores["em"]
    assert sm.foreground[d] > 0.9 and sm.foreground[d] > sm.background[d] - 0.1
    assert em.foreground[d] < 0.25 * em.foreground[t] and em.background[d] > em.foreground[d]
    for name in ("bm-kernel", "bm-topk"):
        assert scores[name].foreground[d] < sm.foreground[d]
        assert scores[name].foreground[t] == pytest.approx(1.0)
    assert np.allclose(em.affinity.sum(axis=1), 1.0, atol=1e-6)


def test_toy_figure(tmp_path: Path) -> None:
    figure = render_toy_figure()
    assert figure.mode == "RGB" and figure.width > 4 * 5 * 40
    out = tmp_path / "toy.png"
    assert main(["visualize", "toy", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == figure.size
        assert np.array_equal(np.asarray(image), np.asarray(figure))
