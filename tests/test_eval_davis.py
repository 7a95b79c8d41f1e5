"""Evaluating results folders on DAVIS (emvos.eval.davis) and the ``emvos eval`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import emvos.cli
from emvos.errors import EmvosInputError
from emvos.eval.davis import (
    EvaluationResult,
    evaluate_results,
    format_report,
    global_csv,
    per_sequence_csv,
    report_paths,
    write_reports,
)
from emvos.eval.metrics import Statistics

HEIGHT, WIDTH, FRAMES = 24, 32, 6
PALETTE = [value for index in range(256) for value in (index * 37 % 256, index * 91 % 256, index * 53 % 256)]


def write_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    """Write ``labels`` (H, W) as a palette (``P``), grayscale (``L``) or ``LA`` PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    if mode == "P":
        image.putpalette(PALETTE)
    elif mode != "L":
        image = image.convert(mode)
    image.save(path)


def two_objects() -> np.ndarray:
    """A (FRAMES, H, W) sequence: object 1 moves right, object 2 moves down."""
    labels = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for t in range(FRAMES):
        labels[t, 2:8, 2 + 2 * t : 9 + 2 * t] = 1
        labels[t, 10 + t : 16 + t, 20:28] = 2
    return labels


def one_object() -> np.ndarray:
    labels = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for t in range(FRAMES):
        labels[t, 5 + t : 15 + t, 8:20] = 1
    return labels


def make_root(root: Path, sequences: dict[str, np.ndarray], year: int = 2017, split: str = "val") -> Path:
    """A DAVIS folder with these ground-truth sequences (T, H, W), one JPEG file name per frame."""
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            write_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", frame)
            jpeg = root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
            jpeg.parent.mkdir(parents=True, exist_ok=True)
            jpeg.write_bytes(b"")
    split_dir = root / "ImageSets" / str(year)
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / f"{split}.txt").write_text("".join(f"{name}\n" for name in sequences))
    return root


def write_results(results: Path, name: str, labels: np.ndarray, frames: range | None = None) -> None:
    for t in frames if frames is not None else range(len(labels)):
        write_png(results / name / f"{t:05d}.png", labels[t])


@pytest.fixture()
def davis17(tmp_path: Path) -> Path:
    return make_root(tmp_path / "davis", {"alpha": two_objects(), "beta": one_object()})


@pytest.fixture()
def perfect(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_results(results, "alpha", two_objects())
    write_results(results, "beta", one_object())
    return results


def scores(result: EvaluationResult) -> dict[str, tuple[float, float]]:
    return {obj.name: (obj.j.mean, obj.f.mean) for obj in result.objects}


# ------------------------------------------------------------------------------------ protocol


def test_perfect_results_score_one(davis17: Path, perfect: Path) -> None:
    result = evaluate_results(perfect, davis17, workers=1)
    assert result.sequences == ("alpha", "beta")
    assert [obj.name for obj in result.objects] == ["alpha_1", "alpha_2", "beta_1"]
    assert result.jf_mean == 1.0
    assert result.j == Statistics(1.0, 1.0, 0.0)
    assert result.f == Statistics(1.0, 1.0, 0.0)
    # the first and last frames are not scored
    assert result.objects[0].frames == ("00001", "00002", "00003", "00004")
    assert result.objects[0].j_per_frame.shape == (FRAMES - 2,)


def test_first_and_last_results_are_neither_needed_nor_scored(davis17: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_results(results, "alpha", two_objects(), range(1, FRAMES - 1))
    write_results(results, "beta", one_object(), range(1, FRAMES - 1))
    assert evaluate_results(results, davis17, workers=1).jf_mean == 1.0
    wrong = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    write_results(results, "alpha", wrong, [0, FRAMES - 1])
    assert evaluate_results(results, davis17, workers=1).jf_mean == 1.0


def test_an_object_missing_from_the_results_scores_as_empty(davis17: Path, perfect: Path) -> None:
    labels = two_objects()
    labels[labels == 2] = 0
    write_results(perfect, "alpha", labels)
    result = evaluate_results(perfect, davis17, workers=1)
    assert scores(result) == {"alpha_1": (1.0, 1.0), "alpha_2": (0.0, 0.0), "beta_1": (1.0, 1.0)}
    assert result.j.mean == pytest.approx(2 / 3)


def test_an_object_absent_from_scored_frames_and_results_scores_one(tmp_path: Path) -> None:
    gt = two_objects()
    gt[1:][gt[1:] == 2] = 0  # object 2 is only in the first frame
    root = make_root(tmp_path / "davis", {"alpha": gt})
    results = tmp_path / "results"
    write_results(results, "alpha", gt)
    assert scores(evaluate_results(results, root, workers=1)) == {
        "alpha_1": (1.0, 1.0),
        "alpha_2": (1.0, 1.0),
    }


def test_ids_absent_from_the_first_frame_are_not_objects(tmp_path: Path) -> None:
    gt = two_objects()
    gt[2:, 20:23, 2:5] = 3  # appears later: not an object (as in the toolkit)
    root = make_root(tmp_path / "davis", {"alpha": gt})
    results = tmp_path / "results"
    write_results(results, "alpha", np.where(gt == 3, 0, gt))
    result = evaluate_results(results, root, workers=1)
    assert [obj.name for obj in result.objects] == ["alpha_1", "alpha_2"]
    assert result.jf_mean == 1.0


def test_ground_truth_value_255_counts_as_background(tmp_path: Path) -> None:
    # The toolkit zeroes 255 in the annotations and passes no void mask to the semi-supervised
    # measures, so predicting an object over those pixels is a false positive.
    gt = one_object()
    gt[:, 0:4, 0:10] = 255
    root = make_root(tmp_path / "davis", {"beta": gt})
    results = tmp_path / "results"
    write_results(results, "beta", np.where(gt == 255, 0, gt))
    assert evaluate_results(results, root, workers=1).jf_mean == 1.0
    write_results(results, "beta", np.where(gt == 255, 1, gt))
    obj = evaluate_results(results, root, workers=1).objects[0]
    np.testing.assert_array_equal(obj.j_per_frame, [120 / 160] * (FRAMES - 2))
    assert obj.f.mean < 1.0


def test_year_2016_binarises_ground_truth_and_results(tmp_path: Path) -> None:
    gt = (one_object() * 255).astype(np.uint8)  # DAVIS-2016 masks are 0/255
    root = tmp_path / "davis"
    for t, frame in enumerate(gt):  # grayscale, one saved with an opaque alpha band as in DAVIS-2016
        write_png(root / "Annotations" / "480p" / "beta" / f"{t:05d}.png", frame, mode="LA" if t == 2 else "L")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("beta\n")
    results = tmp_path / "results"
    labels = one_object()
    labels[:, :, 14:] *= 2  # two result indices over the object: one object once binarised
    write_results(results, "beta", labels)
    result = evaluate_results(results, root, year=2016, workers=1)
    assert [obj.name for obj in result.objects] == ["beta_1"]
    assert result.jf_mean == 1.0
    with pytest.raises(EmvosInputError, match="--year 2016"):
        evaluate_results(results, root, year=2017, sequences=["beta"], workers=1)


def test_year_2016_merges_every_annotated_object(davis17: Path, tmp_path: Path) -> None:
    (davis17 / "ImageSets" / "2016").mkdir()
    (davis17 / "ImageSets" / "2016" / "val.txt").write_text("alpha\n")
    results = tmp_path / "results"
    write_results(results, "alpha", (two_objects() > 0).astype(np.uint8) * 5)
    result = evaluate_results(results, davis17, year=2016, workers=1)
    assert scores(result) == {"alpha_1": (1.0, 1.0)}


def test_sequences_option_and_process_pool_give_the_same_numbers(davis17: Path, perfect: Path) -> None:
    shifted = np.roll(two_objects(), 1, axis=2)
    write_results(perfect, "alpha", shifted)
    serial = evaluate_results(perfect, davis17, workers=1)
    parallel = evaluate_results(perfect, davis17, workers=2)
    assert scores(parallel) == scores(serial)
    assert parallel.global_row() == serial.global_row()
    only_beta = evaluate_results(perfect, davis17, sequences=["beta"], workers=1)
    assert [obj.name for obj in only_beta.objects] == ["beta_1"]


# ------------------------------------------------------------------------------------- reports


def test_reports_have_the_toolkit_columns_and_format(davis17: Path, perfect: Path) -> None:
    labels = two_objects()
    labels[labels == 2] = 0
    write_results(perfect, "alpha", labels)
    result = evaluate_results(perfect, davis17, split="val", workers=1)
    paths = write_reports(result, perfect)
    assert paths == report_paths(perfect, "val")
    global_path, sequence_path, json_path = paths
    assert global_path.name == "global_results-val.csv"
    assert sequence_path.name == "per-sequence_results-val.csv"
    assert global_path.read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n0.667,0.667,0.667,0.000,0.667,0.667,0.000\n"
    )
    assert sequence_path.read_text() == (
        "Sequence,J-Mean,F-Mean\nalpha_1,1.000,1.000\nalpha_2,0.000,0.000\nbeta_1,1.000,1.000\n"
    )
    document = json.loads(json_path.read_text())
    assert document["global"]["J&F-Mean"] == result.jf_mean
    assert document["split"] == "val"
    assert [row["Sequence"] for row in document["per_object"]] == ["alpha_1", "alpha_2", "beta_1"]
    assert document["per_object"][1]["F-Mean"] == 0.0
    alpha_2 = result.objects[1]
    assert document["per_object"][1]["scored_frames"] == list(alpha_2.frames)
    assert document["per_object"][1]["J-per-frame"] == alpha_2.j_per_frame.tolist()
    assert len(document["per_object"][1]["F-per-frame"]) == len(alpha_2.frames)
    # written through temporary files that are gone
    assert sorted(p.name for p in perfect.iterdir() if p.is_file()) == sorted(p.name for p in paths)


def test_csv_writes_nan_as_an_empty_field_and_negative_zero_as_the_toolkit() -> None:
    stats = Statistics(0.5, 0.25, math.nan)
    result = EvaluationResult(2017, "val", (), (), stats, Statistics(0.75, 1.0, -0.0001))
    assert global_csv(result).splitlines()[1] == "0.625,0.500,0.250,,0.750,1.000,-0.000"
    assert per_sequence_csv(result) == "Sequence,J-Mean,F-Mean\n"
    assert "nan" in format_report(result)


# --------------------------------------------------------------------- real data vs the toolkit

# Numbers printed by the official davis2017-evaluation toolkit for the same perturbed results.
TOOLKIT_SCHOOLGIRLS = {
    "global": (
        0.5729528106754969,
        0.3726238282085222,
        0.32051282051282054,
        -0.1139538101148697,
        0.7732817931424716,
        0.8021978021978022,
        -0.03200943925456252,
    ),
    "schoolgirls_1": (0.6380566134016354, 0.8717948717948718, -0.12215481526294025, 0.8938010223344259),
    "schoolgirls_2": (0.25025471418681794, 0.10256410256410256, -0.26740747398431475, 0.9185525843278068),
    "schoolgirls_3": (0.5951968025049551, 0.9358974358974359, -0.009666117123314333, 0.9152746903106763),
    "schoolgirls_4": (0.2859659322751749, 0.15384615384615385, -0.3206884493504598, 0.8865699106392623),
    "schoolgirls_5": (0.0, 0.0, 0.0, 0.0),
    "schoolgirls_6": (0.40912363342127284, 0.11538461538461539, -0.09845947993743748, 0.8964223457197915),
    "schoolgirls_7": (0.4297691016697989, 0.0641025641025641, 0.020699664854378685, 0.902351998665338),
}
TOOLKIT_BEAR_2016 = (
    0.849742889163779,
    0.8114323767476239,
    0.9375,
    -0.194239598336874,
    0.8880534015799342,
    0.9375,
    -0.21130706307101843,
)


def shifted(labels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``labels`` (H, W) moved by (dy, dx) pixels, zero where nothing moved in."""
    out = np.zeros_like(labels)
    height, width = labels.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = labels[
        max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def read_labels(path: Path) -> np.ndarray:
    labels = np.asarray(Image.open(path))
    return labels[..., 0] if labels.ndim == 3 else labels


def test_schoolgirls_matches_the_toolkit(davis2017_sample_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for path in sorted((davis2017_sample_root / "Annotations" / "480p" / "schoolgirls").glob("*.png")):
        labels = shifted(read_labels(path), 3, -3)
        labels[labels == 5] = 0  # object 5 dropped
        if 20 <= int(path.stem) <= 24:
            labels[:] = 0  # empty frames
        write_png(results / "schoolgirls" / path.name, labels)
    result = evaluate_results(results, davis2017_sample_root, split="train", workers=1)
    assert tuple(result.global_row().values()) == pytest.approx(TOOLKIT_SCHOOLGIRLS["global"], abs=1e-12)
    for obj in result.objects:
        expected = TOOLKIT_SCHOOLGIRLS[obj.name]
        assert (obj.j.mean, obj.j.recall, obj.j.decay, obj.f.mean) == pytest.approx(expected, abs=1e-12)


def test_davis2016_bear_matches_the_toolkit(davis2016_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for path in sorted((davis2016_root / "Annotations" / "480p" / "bear").glob("*.png")):
        labels = (shifted(read_labels(path), 6, 6) > 0).astype(np.uint8) * 3
        if 10 <= int(path.stem) <= 14:
            labels[:] = 0
        write_png(results / "bear" / path.name, labels)
    result = evaluate_results(results, davis2016_root, year=2016, sequences=["bear"], workers=1)
    assert tuple(result.global_row().values()) == pytest.approx(TOOLKIT_BEAR_2016, abs=1e-12)


# ---------------------------------------------------------------------------------------- errors


def test_missing_results_folder(davis17: Path, tmp_path: Path) -> None:
    with pytest.raises(EmvosInputError, match="results folder .*nowhere not found"):
        evaluate_results(tmp_path / "nowhere", davis17)


def test_missing_sequence_folder(davis17: Path, perfect: Path) -> None:
    for path in (perfect / "beta").iterdir():
        path.unlink()
    (perfect / "beta").rmdir()
    with pytest.raises(EmvosInputError, match=r"results folder .*beta not found.*--sequences"):
        evaluate_results(perfect, davis17)


def test_missing_result_file(davis17: Path, perfect: Path) -> None:
    (perfect / "alpha" / "00003.png").unlink()
    with pytest.raises(EmvosInputError, match=r"alpha/00003\.png not found"):
        evaluate_results(perfect, davis17)


def test_result_of_the_wrong_size(davis17: Path, perfect: Path) -> None:
    write_png(perfect / "alpha" / "00002.png", np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8))
    with pytest.raises(EmvosInputError, match=r"alpha/00002\.png is 16x12 but the ground truth is 32x24"):
        evaluate_results(perfect, davis17, workers=1)


def test_result_with_an_unknown_object_id(davis17: Path, perfect: Path) -> None:
    labels = two_objects()
    labels[3, 0, 0] = 3
    write_results(perfect, "alpha", labels)
    with pytest.raises(EmvosInputError, match=r"alpha/00003\.png holds object id 3 .* has 2 objects"):
        evaluate_results(perfect, davis17, workers=1)


def test_unreadable_and_rgb_pngs(davis17: Path, perfect: Path) -> None:
    (perfect / "alpha" / "00002.png").write_bytes(b"not a png")
    with pytest.raises(EmvosInputError, match=r"cannot read result mask .*alpha/00002\.png"):
        evaluate_results(perfect, davis17, workers=1)
    write_png(perfect / "alpha" / "00002.png", two_objects()[2], mode="RGB")
    with pytest.raises(EmvosInputError, match=r"alpha/00002\.png is a RGB-mode image"):
        evaluate_results(perfect, davis17, workers=1)


def test_unknown_sequences(davis17: Path, perfect: Path) -> None:
    with pytest.raises(EmvosInputError, match="unknown sequence.*'gamma' requested"):
        evaluate_results(perfect, davis17, sequences=["alpha", "gamma"])
    (davis17 / "ImageSets" / "2017" / "val.txt").write_text("alpha\ndelta\n")
    with pytest.raises(EmvosInputError, match=r"'delta' listed in .*val\.txt"):
        evaluate_results(perfect, davis17)


def test_missing_split_file(davis17: Path, perfect: Path) -> None:
    with pytest.raises(EmvosInputError, match=r"split file .*ImageSets/2017/test\.txt not found.*available: val"):
        evaluate_results(perfect, davis17, split="test")


def test_missing_annotations_and_incomplete_ground_truth(davis17: Path, perfect: Path, tmp_path: Path) -> None:
    with pytest.raises(EmvosInputError, match="Annotations/480p not found"):
        evaluate_results(perfect, tmp_path / "empty")
    (davis17 / "JPEGImages" / "480p" / "beta" / "00099.jpg").write_bytes(b"")
    with pytest.raises(EmvosInputError, match="6 annotations for 7 frames"):
        evaluate_results(perfect, davis17)


def test_too_few_annotated_frames(tmp_path: Path) -> None:
    root = make_root(tmp_path / "davis", {"short": one_object()[:2]})
    with pytest.raises(EmvosInputError, match="2 annotated frames; at least 3"):
        evaluate_results(tmp_path, root)


# ------------------------------------------------------------------------------------------- CLI


@pytest.fixture()
def run_emvos():
    """``emvos.cli.main``, which registers only the eval subcommand for ``emvos eval ...`` (no model imports)."""
    return emvos.cli.main


def test_cli_eval_end_to_end(run_emvos, davis17: Path, perfect: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_emvos(["eval", str(perfect), "--davis-root", str(davis17), "--workers", "1"])
    out = capsys.readouterr().out
    assert status == 0
    assert "J&F-Mean" in out and "alpha_2" in out and "1.000" in out
    for path in report_paths(perfect, "val"):
        assert path.is_file()
        assert str(path) in out


def test_cli_eval_options(run_emvos, davis17: Path, perfect: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_emvos(
        [
            "eval",
            str(perfect),
            "--davis-root",
            str(davis17),
            "--year",
            "2017",
            "--split",
            "val",
            "--sequences",
            "beta",
        ]
    )
    assert status == 0
    assert "beta_1" in capsys.readouterr().out
    assert "alpha" not in (perfect / "per-sequence_results-val.csv").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sequences", "gamma"], "unknown sequence"),
        (["--sequences", "alpha,,beta"], "empty name"),
        (["--split", "test"], "split file"),
    ],
)
def test_cli_eval_bad_input_exits_2_with_one_line(
    run_emvos,
    davis17: Path,
    perfect: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    status = run_emvos(["eval", str(perfect), "--davis-root", str(davis17), *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("emvos: error: ") and message in err
    assert err.count("\n") == 1


def test_cli_eval_missing_results_folder(run_emvos, davis17: Path, tmp_path: Path, capsys) -> None:
    assert run_emvos(["eval", str(tmp_path / "missing"), "--davis-root", str(davis17)]) == 2
    assert "results folder" in capsys.readouterr().err


def test_cli_eval_rejects_bad_option_values(run_emvos, davis17: Path, perfect: Path) -> None:
    for extra in (["--workers", "0"], ["--year", "2018"]):
        with pytest.raises(SystemExit) as exit_info:
            run_emvos(["eval", str(perfect), "--davis-root", str(davis17), *extra])
        assert exit_info.value.code == 2
