"""``emvos study matching``: a tiny end-to-end study, resume, cached evaluations, and the table math."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from emvos.cli import main
from emvos.data.synthetic import DistractorSettings, write_distractor_benchmark
from emvos.errors import EmvosInputError
from emvos.eval.davis import RESOLUTION
from emvos.inference.predictor import VideoPredictor
from emvos.io import open_frames, read_mask
from emvos.model.config import Bijective, ModelConfig
from emvos.model.network import EMVOS
from emvos.study import matching as study_matching
from emvos.study.config import load_study_config
from emvos.study.matching import EmbeddingMemo, run_config
from emvos.study.report import (
    BEGIN,
    END,
    StudyResults,
    ordering_sentence,
    render_section,
    replace_section,
    summarize,
    table_rows,
)
from emvos.train import Trainer, TrainingInterrupted

HELD_OUT = "dist-0001"


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DAVIS-layout folder standing in for the real sequences (three of them)."""
    root = tmp_path_factory.mktemp("real") / "real"
    write_distractor_benchmark(root, videos=3, length=6, settings=DistractorSettings.from_difficulty(0.2), seed=7,
                               size=(64, 96), split="train")
    return root


def study_config(tmp_path: Path, real_root: Path, iterations: int = 2) -> Path:
    """A study config on the tiny random encoder, tiny sets and a two-point grid of each kind."""
    stage = {"iterations": iterations, "batch_size": 2, "clip_len": 3, "crop": 32, "lr": 1e-3}
    data: dict[str, Any] = {
        "seeds": [0, 1, 2],
        "variants": ["sm", "em", "sm+em"],
        "real": {"root": str(real_root), "held_out": [HELD_OUT], "year": 2017, "frames": 4, "frame_step": 1,
                 "resolution": 0},
        "distractors": {"size": "96x64", "difficulty": 0.5, "texture_source": str(real_root),
                        "train": {"videos": 2, "frames": 5, "seed": 10}, "test": {"videos": 2, "frames": 4, "seed": 20},
                        "resolution": 0},
        "bijective": {"kernel": [[1, 2], [2, 2]], "topk": [[4, 2], [8, 2]]},
        "threads": 1,
        "train": {
            "model": {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8]},
            "em_logit_std": 4.0,
            "stages": [
                {"name": "distractors", "data": {"kind": "davis", "root": "${out}/data/distractors-train",
                                                 "options": {"year": 2017, "split": "train"}}, **stage},
                {"name": "real", "data": {"kind": "davis", "root": str(real_root),
                                          "options": {"year": 2017, "split": "train"}}, **stage},
            ],
            "device": "cpu", "workers": 0, "threads": 1, "log_every": 1, "tensorboard": False,
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


HEAD, TAIL = "# Matching study\n\nGenerator notes.\n\n", "\n\n## Toy\n\nkept\n"
DOC = f"{HEAD}{BEGIN}\nnot run yet\n{END}{TAIL}"


def _study(config: Path, out: Path, doc: Path, *overrides: str) -> int:
    return main(["study", "matching", "--config", str(config), "--out", str(out), "--doc", str(doc), "--quiet",
                 *overrides])


@pytest.mark.slow
def test_study_end_to_end_then_skips_finished_work(tmp_path: Path, real_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config, out, doc = study_config(tmp_path, real_root), tmp_path / "study", tmp_path / "doc.md"
    doc.write_text(DOC)
    assert _study(config, out, doc) == 0

    text = doc.read_text()
    assert text.startswith(HEAD + BEGIN) and text.endswith(END + TAIL)
    assert "not run yet" not in text and text.count(BEGIN) == 1
    assert "| XII | SM + EM |" in text and "| kernel | 2 | 2 |" in text and f"--out {out}" in text
    results = json.loads((out / "results.json").read_text())
    labels = {"sm", "em", "sm+em", "bm-kernel-1-2", "bm-kernel-2-2", "bm-topk-4-2", "bm-topk-8-2"}
    for name in ("real", "distractors"):
        assert set(results["scores"][name]) == labels
        assert all(set(by_seed) == {"0", "1", "2"} for by_seed in results["scores"][name].values())
        sm = [100 * v for v in results["scores"][name]["sm"].values()]
        assert results["table"][name]["sm"]["mean"] == pytest.approx(np.mean(sm))
        assert results["table"][name]["sm"]["std"] == pytest.approx(np.std(sm, ddof=1))
        assert "pairs are in the paper's order" in results["ordering"][name]
    # The held-out sequence is the real test set, and is in neither the training data nor the textures.
    assert sorted(p.name for p in (out / "data" / "real-test" / "JPEGImages" / RESOLUTION).iterdir()) == [HELD_OUT]
    assert len(list((out / "data" / "real-test" / "Annotations" / RESOLUTION / HELD_OUT).iterdir())) == 4
    assert not (out / "data" / "textures" / HELD_OUT).exists() and (out / "data" / "textures" / "dist-0000").is_dir()
    run = run_config(load_study_config(config), "sm", 0, out)
    run.out = str(tmp_path / "other")
    trainer = Trainer(run, progress=False)
    assert sorted(v.name for v in trainer.stage_dataset(1).videos) == ["dist-0000", "dist-0002"]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("finished work was done again")

    monkeypatch.setattr(study_matching, "train", refuse)
    monkeypatch.setattr(study_matching, "segment_sequence", refuse)
    doc.write_text(DOC)
    assert _study(config, out, doc) == 0
    assert doc.read_text() == text


@pytest.mark.slow
def test_a_stopped_run_continues_and_stale_scores_are_redone(tmp_path: Path, real_root: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config, out, doc = study_config(tmp_path, real_root), tmp_path / "study", tmp_path / "doc.md"
    real_train = study_matching.train

    def stop_after_one(run: Any, resume: Any = None, progress: bool = True) -> None:
        real_train(run, resume=resume, progress=progress, until=1)
        raise TrainingInterrupted(signal.SIGINT, 1, Path(run.out) / "last.pt")

    monkeypatch.setattr(study_matching, "train", stop_after_one)
    assert _study(config, out, doc, "seeds=[0]", "variants=[sm]") == 128 + signal.SIGINT
    run = out / "runs" / "sm-seed0"
    record = json.loads((run / "study-run.json").read_text())
    assert record["finished"] is False and (run / "last.pt").is_file()
    assert not doc.exists()

    monkeypatch.setattr(study_matching, "train", real_train)
    assert _study(config, out, doc, "seeds=[0]", "variants=[sm]") == 0  # resumes: a fresh start would refuse
    record = json.loads((run / "study-run.json").read_text())
    assert record["finished"] is True and record["step"] == 4
    assert json.loads((run / "eval" / "real" / "sm.json").read_text())["key"]["step"] == 4
    assert BEGIN in doc.read_text() and "SM + EM | — | — |" in doc.read_text()

    # A longer recipe continues the same runs, and their scores are computed again.
    assert _study(config, out, doc, "seeds=[0]", "variants=[sm]", "train.stages.real.iterations=3") == 0
    assert json.loads((run / "study-run.json").read_text())["step"] == 5
    assert json.loads((run / "eval" / "distractors" / "bm-topk-8-2.json").read_text())["key"]["step"] == 5


def test_data_built_with_other_settings_is_refused(tmp_path: Path, real_root: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config, out, doc = study_config(tmp_path, real_root), tmp_path / "study", tmp_path / "doc.md"
    assert _study(config, out, doc, "seeds=[0]", "variants=[em]") == 0
    capsys.readouterr()
    assert _study(config, out, doc, "seeds=[0]", "variants=[em]", "distractors.difficulty=0.9") == 2
    assert "built with other settings" in capsys.readouterr().err


# -- table math on fabricated scores -----------------------------------------------------------------------
def _scores(means: dict[str, float], spread: float = 0.01) -> dict[str, dict[int, float]]:
    """J&F per seed 0, 1, 2: ``mean - spread``, ``mean``, ``mean + spread``."""
    return {label: {0: m - spread, 1: m, 2: m + spread} for label, m in means.items()}


PAPER_LIKE = {"sm": 0.50, "bm-kernel-16-32": 0.52, "bm-kernel-32-32": 0.55, "bm-kernel-64-32": 0.51,
              "bm-kernel-32-16": 0.54, "bm-kernel-32-64": 0.53, "bm-topk-64-16": 0.49, "bm-topk-128-16": 0.51,
              "bm-topk-256-16": 0.505, "bm-topk-128-8": 0.48, "bm-topk-128-32": 0.50, "em": 0.57, "sm+em": 0.60}


def test_summary_is_mean_and_sample_std_in_percent() -> None:
    s = summarize([0.50, 0.52, 0.57])
    assert s.mean == pytest.approx(53.0) and s.std == pytest.approx(np.std([50, 52, 57], ddof=1)) and s.n == 3
    assert s.text(3) == "53.0 ± 3.6" and s.text(4) == "53.0 ± 3.6 (n=3)"
    one = summarize([0.4])
    assert math.isnan(one.std) and one.text(1) == "40.0"


def test_best_of_grid_and_an_agreeing_ordering() -> None:
    config = load_study_config("matching")
    rows = table_rows(_scores(PAPER_LIKE), config)
    assert rows["bm-kernel"].setting == (32, 32) and rows["bm-kernel"].summary.mean == pytest.approx(55.0)
    assert rows["bm-topk"].setting == (128, 16) and rows["bm-topk"].summary.mean == pytest.approx(51.0)
    assert rows["sm"].summary.std == pytest.approx(1.0)
    sentence = ordering_sentence("real", rows)
    assert "it agrees with the paper's ordering" in sentence and "10 of 10 pairs" in sentence
    assert "SM 50.0 < SM→BM top-K 51.0 < SM→BM kernel 55.0 < EM 57.0 < SM+EM 60.0" in sentence
    assert "EM +7.0 (paper +2.2)" in sentence and "SM+EM +10.0 (paper +3.3)" in sentence
    assert "1.0 to 1.0 points" in sentence


def test_a_disagreeing_ordering_says_so_and_counts_pairs() -> None:
    config = load_study_config("matching")
    swapped = {**PAPER_LIKE, "em": 0.45}  # EM now below SM and both BM: 3 of its 4 pairs disagree
    sentence = ordering_sentence("distractors", table_rows(_scores(swapped), config))
    assert "does not agree with the paper's ordering" in sentence and "7 of 10 pairs" in sentence
    assert sentence.index("EM 45.0") < sentence.index("SM 50.0")
    reverse = {"sm": 0.6, "em": 0.5, "sm+em": 0.4}
    assert "is the reverse of" in ordering_sentence("x", table_rows(_scores(reverse), config))


def test_rendered_section_from_fabricated_results() -> None:
    # Pinned, whatever the preset says: three seeds and 120 + 120 iterations.
    config = load_study_config("matching", ["seeds=[0,1,2]", "train.stages.static.iterations=120",
                                            "train.stages.real.iterations=120"])
    scores = {"real": _scores(PAPER_LIKE), "distractors": _scores({**PAPER_LIKE, "bm-topk-256-16": 0.53})}
    results = StudyResults("emvos study matching --config matching", config, scores,
                           {"real": "five held-out sequences", "distractors": "six videos"},
                           {"data": 60.0, "train": 780.0, "eval": 360.0}, ["AMD EPYC, 2 cores"])
    section = render_section(results)
    assert "| Baseline | SM | 50.0 ± 1.0 | 50.0 ± 1.0 | 75.7 |" in section
    assert "| VI | SM → BM (top-K), best K1/K2 | 51.0 ± 1.0 (128/16) | 53.0 ± 1.0 (256/16) | 76.2 (128/16) |" in section
    assert "| top-K | 256 | 16 | 50.5 ± 1.0 | **53.0 ± 1.0** | 75.9 |" in section
    assert "| kernel | 32 | 32 | **55.0 ± 1.0** | **55.0 ± 1.0** | 77.5 |" in section
    assert "20.0 min: data 1.0 min, training 13.0 min, evaluation 6.0 min" in section
    assert "240 iterations in all" in section and "9 runs, 2160 iterations" in section
    assert results.to_json()["table"]["distractors"]["bm-topk"]["k1_k2"] == [256, 16]


def test_replace_section_keeps_the_rest() -> None:
    text = f"intro\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert replace_section(text, "new\n") == f"intro\n\n{BEGIN}\nnew\n{END}\n\nafter\n"
    assert replace_section("intro\n", "new") == f"intro\n\n{BEGIN}\nnew\n{END}\n"
    quoted = f"written between `{BEGIN}` and `{END}`.\n\n"
    assert replace_section(quoted + text, "new") == quoted + f"intro\n\n{BEGIN}\nnew\n{END}\n\nafter\n"
    for broken in (f"{END}\n{BEGIN}\n", f"intro\n{BEGIN}\n"):
        with pytest.raises(EmvosInputError, match="markers"):
            replace_section(broken, "new")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(EmvosInputError, match="unknown key real.heldout"):
        load_study_config("matching", ["real.heldout=[a]"])
    with pytest.raises(EmvosInputError, match="seeds"):
        load_study_config("matching", ["seeds=[1,1]"])
    with pytest.raises(EmvosInputError, match="variants"):
        load_study_config("matching", ["variants=[bm]"])
    with pytest.raises(EmvosInputError, match="no such study config"):
        load_study_config(str(tmp_path / "missing.yaml"))


# -- shared embeddings ---------------------------------------------------------------------------------------
def test_shared_embeddings_give_the_same_masks(real_root: Path) -> None:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test", key_channels=8, decoder_widths=(8, 8, 8)), encoder_weights=None)
    frames = real_root / "JPEGImages" / RESOLUTION / "dist-0000"
    mask = read_mask(real_root / "Annotations" / RESOLUTION / "dist-0000" / "00000.png").labels
    memo = EmbeddingMemo()
    for bijective in (None, Bijective("topk", 4, 2), Bijective("kernel", 1, 2)):
        plain = VideoPredictor(model, device="cpu", resolution=0, bijective=bijective)
        shared = memo.attach(VideoPredictor(model, device="cpu", resolution=0, bijective=bijective))
        outputs = []
        for predictor in (plain, shared):
            state = predictor.init_state()
            outputs.append([predictor.step(state, f.image, mask if f.index == 0 else None).labels
                            for f in open_frames(frames)])
        assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))
    assert len(memo) == 6  # each frame embedded once for the three matchings
