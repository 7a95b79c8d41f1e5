"""The matching study (the paper's Table 5): SM, BM and EM compared with our own runs.

:func:`run_study` does it all, resumably, under the output folder ``OUT``:

1. **Data** (``OUT/data``, each folder built once and checked against its settings on re-runs):
   the distractor benchmark's training and test sets (:func:`write_distractor_benchmark`, fixed
   seeds; textures cut from the real data's training sequences only), and the real test set, a copy
   of the first frames of the held-out sequences.
2. **Training** (``OUT/runs/<variant>-seed<s>``): one run per variant (``sm``, ``em``, ``sm+em``)
   and seed, with :func:`emvos.train.train` and the same recipe; the held-out sequences are left
   out of every stage reading the real data. A run stopped half-way continues from its ``last.pt``;
   a finished run (``study-run.json``) is not trained again.
3. **Evaluation** (``OUT/runs/<run>/eval/<test set>/<matching>.json``): every network segments both
   test sets from their first-frame masks (:func:`emvos.eval.benchmark.segment_sequence`) and is
   scored with :func:`emvos.eval.davis.evaluate_results`; SM networks also with bijective matching
   at test time over the K1/K2 grid. Cached scores are reused while the network and the test set are
   unchanged.
4. **Report**: ``OUT/results.json``, ``OUT/matching-study.md``, and the results section of the doc
   (:mod:`emvos.study.report`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emvos.data.synthetic import write_distractor_benchmark
from emvos.errors import EmvosInputError
from emvos.eval.benchmark import segment_sequence
from emvos.eval.davis import RESOLUTION, EvaluationResult, evaluate_results
from emvos.inference.predictor import VideoPredictor
from emvos.io import FRAME_EXTENSIONS, natural_sort_key
from emvos.model.checkpoint import load_model
from emvos.model.config import BRANCH_SETS, Bijective
from emvos.model.network import FrameEmbedding
from emvos.study.config import OUT_PLACEHOLDER, StudyConfig
from emvos.study.report import StudyResults, matching_label, write_reports
from emvos.train import TrainConfig, ValConfig, train

#: Settings file of every prepared data folder (compared on re-runs).
DATA_MANIFEST = "study-data.json"
#: Progress and timing of a training run, in its folder.
RUN_RECORD = "study-run.json"
#: The test sets, in the order of the tables.
TEST_SETS = ("real", "distractors")


@dataclass(frozen=True)
class EvalSet:
    """A DAVIS-layout folder the trained networks segment and are scored on.

    Attributes:
        name: ``real`` or ``distractors``.
        root: the folder.
        year: scored as DAVIS 2016 (binarised) or 2017 (object ids).
        sequences: its sequences.
        resolution: shorter side frames are segmented at (0 keeps the size).
        settings: what it was built from (part of every cached evaluation's key).
        description: one line for the report.
    """

    name: str
    root: Path
    year: int
    sequences: tuple[str, ...]
    resolution: int
    settings: dict[str, Any]
    description: str


@dataclass(frozen=True)
class MatchingSpec:
    """One way of segmenting with a trained network.

    Attributes:
        label: ``sm``, ``em``, ``sm+em`` or ``bm-<kind>-<K1>-<K2>``.
        bijective: bijective matching replacing SM at test time, if any.
    """

    label: str
    bijective: Bijective | None = None


def matching_specs(variant: str, config: StudyConfig) -> list[MatchingSpec]:
    """The matchings a network of ``variant`` is evaluated with: its own, and for ``sm`` the bijective grid."""
    specs = [MatchingSpec(variant)]
    if variant == "sm":
        for kind in ("kernel", "topk"):
            for k1, k2 in getattr(config.bijective, kind):
                specs.append(MatchingSpec(matching_label(kind, k1, k2), Bijective(kind, float(k1), float(k2))))
    return specs


class EmbeddingMemo:
    """Shares frame embeddings between the predictors of one network.

    A network's embedding of a frame (:meth:`EMVOS.embed`: frozen encoder, keys and the decoder's
    object-independent reductions) does not depend on the matching, so the matchings evaluated on one
    network embed each frame once. Embeddings are keyed by the exact contents of the network's input,
    so a frame is only ever given its own embedding.
    """

    def __init__(self) -> None:
        self._embeddings: dict[tuple[tuple[int, ...], bytes], FrameEmbedding] = {}

    def attach(self, predictor: VideoPredictor) -> VideoPredictor:
        """Make ``predictor`` (its own copy of the network) look embeddings up here first; returns it."""
        embed = predictor.model.embed

        def remembered(images: Tensor) -> FrameEmbedding:
            """``images``: ``(B, 3, H, W)`` network input."""
            data = images.detach().cpu().contiguous().numpy().tobytes()
            key = (tuple(images.shape), hashlib.blake2b(data, digest_size=20).digest())
            if key not in self._embeddings:
                self._embeddings[key] = embed(images)
            return self._embeddings[key]

        predictor.model.embed = remembered  # type: ignore[method-assign]  # this predictor's network only
        return predictor

    def __len__(self) -> int:
        """Frames remembered."""
        return len(self._embeddings)

    def clear(self) -> None:
        """Forget every embedding (between sequences, to bound memory)."""
        self._embeddings.clear()


# -- data -------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _prepare(folder: Path, settings: dict[str, Any], build: Callable[[Path], None]) -> float:
    """Build ``folder`` with ``build`` unless it was built with the same ``settings``; returns its build seconds.

    The folder is built under a temporary name and renamed when complete, so an interrupted build is
    started again rather than taken as done.

    Raises:
        EmvosInputError: the folder exists but was built with other settings.
    """
    settings = json.loads(json.dumps(settings))  # the form it takes when read back
    manifest = folder / DATA_MANIFEST
    if folder.exists():
        stored = json.loads(manifest.read_text()) if manifest.is_file() else {}
        if stored.get("settings") != settings:
            raise EmvosInputError(f"{folder}: holds study data built with other settings (see {manifest}); "
                                  "remove it or give the study another --out")
        return float(stored.get("seconds", 0.0))
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    build(tmp)
    seconds = time.perf_counter() - start
    _write_json(tmp / DATA_MANIFEST, {"settings": settings, "seconds": seconds})
    tmp.rename(folder)
    return seconds


def _sorted_files(folder: Path, suffixes: Collection[str]) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=lambda p: natural_sort_key(p.name))


def _texture_folder(config: StudyConfig, data: Path) -> tuple[str | None, float]:
    """The distractors' texture photos, and the seconds it took to gather them.

    A DAVIS root gets a folder of links to the frames of every sequence but the held-out ones.
    """
    source = config.distractors.texture_source
    if not source:
        return None, 0.0
    frames = Path(source) / "JPEGImages" / RESOLUTION
    if not frames.is_dir():
        return source, 0.0
    held_out = set(config.real.held_out)

    def build(tmp: Path) -> None:
        for sequence in sorted(p for p in frames.iterdir() if p.is_dir() and p.name not in held_out):
            (tmp / sequence.name).mkdir(parents=True)
            for image in _sorted_files(sequence, FRAME_EXTENSIONS):
                os.symlink(image.resolve(), tmp / sequence.name / image.name)

    folder = data / "textures"
    seconds = _prepare(folder, {"source": source, "left_out": sorted(held_out)}, build)
    return str(folder), seconds


def _distractor_set(config: StudyConfig, data: Path, name: str, textures: str | None) -> tuple[EvalSet, float]:
    """The ``train`` or ``test`` distractor set (written once), and its build seconds."""
    dist = config.distractors
    split = getattr(dist, name)
    settings = dist.settings()
    recipe = {"videos": split.videos, "frames": split.frames, "seed": split.seed, "size": dist.size,
              "settings": asdict(settings), "texture_source": dist.texture_source,
              "left_out": sorted(config.real.held_out) if textures != dist.texture_source else []}

    def build(tmp: Path) -> None:
        write_distractor_benchmark(tmp, videos=split.videos, length=split.frames, settings=settings, seed=split.seed,
                                   size=dist.frame_size(), texture_source=textures, split=name)

    folder = data / f"distractors-{name}"
    seconds = _prepare(folder, recipe, build)
    sequences = tuple(line for line in (folder / "ImageSets" / "2017" / f"{name}.txt").read_text().split() if line)
    height, width = dist.frame_size()
    description = (f"{split.videos} videos of {split.frames} frames ({width}x{height}, difficulty {dist.difficulty:g}"
                   f"{', ' + ', '.join(f'{k} {v}' for k, v in dist.knobs.items()) if dist.knobs else ''}, "
                   f"seed {split.seed}, textures {'from ' + dist.texture_source if textures else 'procedural'}), "
                   f"segmented at resolution {dist.resolution or 'native'}, targets scored as DAVIS 2017")
    return EvalSet("distractors", folder, 2017, sequences, dist.resolution, recipe, description), seconds


def _real_set(config: StudyConfig, data: Path) -> tuple[EvalSet, float]:
    """The held-out real sequences' first frames (every ``frame_step``-th), copied once; and the copy's seconds."""
    real = config.real
    root = Path(real.root)
    for sequence in real.held_out:
        for kind in ("JPEGImages", "Annotations"):
            if not (root / kind / RESOLUTION / sequence).is_dir():
                raise EmvosInputError(f"{root / kind / RESOLUTION / sequence}: held-out sequence not found; "
                                      "fix real.root or real.held_out")
    settings = {"root": real.root, "sequences": list(real.held_out), "frames": real.frames,
                "frame_step": real.frame_step, "year": real.year}

    def build(tmp: Path) -> None:
        for sequence in real.held_out:
            images = _sorted_files(root / "JPEGImages" / RESOLUTION / sequence, FRAME_EXTENSIONS)
            kept = images[::real.frame_step][:real.frames or None]
            if len(kept) < 3:
                raise EmvosInputError(f"{root}: held-out sequence {sequence!r} has fewer than 3 frames to score")
            for kind in ("JPEGImages", "Annotations"):
                (tmp / kind / RESOLUTION / sequence).mkdir(parents=True)
            for index, image in enumerate(kept):
                mask = root / "Annotations" / RESOLUTION / sequence / f"{image.stem}.png"
                if not mask.is_file():
                    raise EmvosInputError(f"{mask}: missing; every kept frame of a held-out sequence needs its mask")
                shutil.copyfile(image, tmp / "JPEGImages" / RESOLUTION / sequence / f"{index:05d}{image.suffix}")
                shutil.copyfile(mask, tmp / "Annotations" / RESOLUTION / sequence / f"{index:05d}.png")
        split = tmp / "ImageSets" / str(real.year) / "val.txt"
        split.parent.mkdir(parents=True)
        split.write_text("".join(f"{sequence}\n" for sequence in real.held_out))

    folder = data / "real-test"
    seconds = _prepare(folder, settings, build)
    frames = f"the first {real.frames} frames" if real.frames else "all frames"
    step = f" (one in {real.frame_step})" if real.frame_step > 1 else ""
    description = (f"{frames}{step} of {len(real.held_out)} sequences of {real.root} held out from all training "
                   f"({', '.join(real.held_out)}), segmented at resolution {real.resolution or 'native'}, "
                   f"scored as DAVIS {real.year}")
    return EvalSet("real", folder, real.year, tuple(real.held_out), real.resolution, settings, description), seconds


def prepare_data(config: StudyConfig, out: Path) -> tuple[dict[str, EvalSet], float]:
    """Build (or check) ``OUT/data``; returns the test sets by name and the seconds all builds took."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    textures, texture_seconds = _texture_folder(config, data)
    _, train_seconds = _distractor_set(config, data, "train", textures)
    distractors, test_seconds = _distractor_set(config, data, "test", textures)
    real, real_seconds = _real_set(config, data)
    return {"real": real, "distractors": distractors}, texture_seconds + train_seconds + test_seconds + real_seconds


# -- training ---------------------------------------------------------------------------------------------
def run_name(variant: str, seed: int) -> str:
    """The run's folder name, e.g. ``sm-em-seed2``."""
    return f"{variant.replace('+', '-')}-seed{seed}"


def run_config(config: StudyConfig, variant: str, seed: int, out: Path) -> TrainConfig:
    """The training config of one run: the study's recipe with the variant's branches and the seed.

    ``${out}`` in data roots becomes ``out``; the held-out sequences become the (never run)
    validation set, which makes the trainer leave them out of stages reading the real data; the
    equalized keys' calibration (``em_logit_std``) applies to variants with an ``em`` branch.
    """
    base = config.train
    branches = BRANCH_SETS[variant]
    stages = [replace(s, data=replace(s.data, root=s.data.root.replace(OUT_PLACEHOLDER, str(out))))
              for s in base.stages]
    run = replace(base, model=replace(base.model, branches=branches), stages=stages, seed=seed,
                  out=str(out / "runs" / run_name(variant, seed)),
                  val=ValConfig(root=config.real.root, sequences=list(config.real.held_out), every=0),
                  em_logit_std=base.em_logit_std if "em" in branches else 0.0)
    run.validate()
    return run


def machine() -> str:
    """This machine in a few words: CPU model and cores, or the GPU; PyTorch's version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {cores} cores{gpu}, PyTorch {torch.__version__}"


def _config_hash(config: TrainConfig) -> str:
    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def train_run(config: TrainConfig, progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Train one run to the end: skip it if finished, else continue from its ``last.pt`` or start it.

    Returns:
        The run's record (``study-run.json``: ``finished``, ``step``, ``train_seconds`` summed over
        every call, ``machine``, ``config_hash``), and whether this call trained.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after the trainer saved ``last.pt`` (the record keeps
            the time spent so far).
    """
    folder = Path(config.out)
    record_path, last = folder / RUN_RECORD, folder / "last.pt"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"train_seconds": 0.0}
    wanted = _config_hash(config)
    if record.get("finished") and record.get("config_hash") == wanted and last.is_file():
        return record, False
    start = time.perf_counter()
    finished = False
    try:
        result = train(config, resume=last if last.is_file() else None, progress=progress)
        finished = result.finished
        record["step"] = result.step
    finally:
        folder.mkdir(parents=True, exist_ok=True)
        record.update(finished=finished, config_hash=wanted, machine=machine(),
                      train_seconds=record["train_seconds"] + time.perf_counter() - start)
        _write_json(record_path, record)
    return record, True


# -- evaluation -------------------------------------------------------------------------------------------
def _sequence_scores(result: EvaluationResult) -> dict[str, float]:
    """J&F of each sequence of a scored test set (the mean over its objects)."""
    by_sequence: dict[str, list[float]] = {}
    for obj in result.objects:
        by_sequence.setdefault(obj.sequence, []).append((obj.j.mean + obj.f.mean) / 2)
    return {name: sum(v) / len(v) for name, v in by_sequence.items()}


def evaluate_run(run: TrainConfig, record: dict[str, Any], specs: list[MatchingSpec], test_set: EvalSet,
                 threads: int = 0) -> dict[str, dict[str, Any]]:
    """Segment ``test_set`` with the run's ``last.pt`` in every matching of ``specs`` and score it.

    Scores already in ``<run>/eval/<test set>/<label>.json`` for the same network (config and step)
    and test set are reused. The matchings of one network share its frame embeddings
    (:class:`EmbeddingMemo`).

    Returns:
        By matching label: ``{"key", "jf", "j", "f", "sequences", "seconds"}`` (scores in [0, 1]).
    """
    folder = Path(run.out) / "eval" / test_set.name
    key = {"run": record["config_hash"], "step": record["step"], "test_set": test_set.settings,
           "resolution": test_set.resolution}
    scores: dict[str, dict[str, Any]] = {}
    pending: list[MatchingSpec] = []
    for spec in specs:
        path = folder / f"{spec.label}.json"
        cached = json.loads(path.read_text()) if path.is_file() else None
        if cached is not None and cached["key"] == {**key, "matching": spec.label}:
            scores[spec.label] = cached
        else:
            pending.append(spec)
    if not pending:
        return scores
    if threads:
        torch.set_num_threads(threads)
    model = load_model(Path(run.out) / "last.pt")
    memo = EmbeddingMemo()
    predictors = {spec.label: memo.attach(VideoPredictor(model, device=run.device, resolution=test_set.resolution,
                                                         bijective=spec.bijective)) for spec in pending}
    seconds = dict.fromkeys(predictors, 0.0)
    for label in predictors:
        shutil.rmtree(folder / label, ignore_errors=True)
    for sequence in test_set.sequences:
        frames = test_set.root / "JPEGImages" / RESOLUTION / sequence
        first_mask = _sorted_files(test_set.root / "Annotations" / RESOLUTION / sequence, (".png",))[0]
        for label, predictor in predictors.items():
            start = time.perf_counter()
            segment_sequence(predictor, frames, first_mask, folder / label / sequence)
            seconds[label] += time.perf_counter() - start
        memo.clear()
    for label in predictors:
        start = time.perf_counter()
        result = evaluate_results(folder / label, test_set.root, year=test_set.year, sequences=test_set.sequences,
                                  workers=1)
        scores[label] = {"key": {**key, "matching": label}, "jf": result.jf_mean, "j": result.j.mean,
                         "f": result.f.mean, "sequences": _sequence_scores(result),
                         "seconds": seconds[label] + time.perf_counter() - start}
        _write_json(folder / f"{label}.json", scores[label])
    return scores


# -- the study --------------------------------------------------------------------------------------------
def run_study(config: StudyConfig, out: Path, command: str, doc: Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> StudyResults:
    """Prepare the data, train and evaluate every run (skipping finished work), and write the reports.

    Args:
        config: the study.
        out: the study's folder.
        command: the command line that runs this study (written into the report).
        doc: a Markdown file whose results section (between the study markers) is replaced.
        progress: show the trainer's progress bars.
        log: where progress lines go.

    Raises:
        EmvosInputError: bad config or data.
        TrainingInterrupted: on SIGINT/SIGTERM during training, after saving the run's ``last.pt``.
    """
    config.validate()
    start = time.perf_counter()
    test_sets, data_seconds = prepare_data(config, out)
    log(f"study data in {out / 'data'} ({time.perf_counter() - start:.0f} s)")
    runs = [(variant, seed) for seed in config.seeds for variant in config.variants]
    scores: dict[str, dict[str, dict[int, float]]] = {name: {} for name in TEST_SETS}
    train_seconds = eval_seconds = 0.0
    machines: list[str] = []
    for number, (variant, seed) in enumerate(runs, 1):
        run = run_config(config, variant, seed, out)
        log(f"[{number}/{len(runs)}] {variant} seed {seed}: {run.out}")
        record, trained = train_run(run, progress=progress)
        if not trained:
            log(f"  trained already ({record['step']} iterations, {record['train_seconds']:.0f} s)")
        train_seconds += record["train_seconds"]
        if record["machine"] not in machines:
            machines.append(record["machine"])
        specs = matching_specs(variant, config)
        for name in TEST_SETS:
            evaluated = evaluate_run(run, record, specs, test_sets[name], config.threads)
            for label, entry in evaluated.items():
                scores[name].setdefault(label, {})[seed] = entry["jf"]
                eval_seconds += entry["seconds"]
            own = evaluated[variant]["jf"]
            log(f"  {name}: J&F {100 * own:.1f} ({variant})"
                + (f", {len(specs) - 1} bijective settings" if len(specs) > 1 else ""))
    results = StudyResults(
        command=command, config=config, scores=scores,
        test_sets={name: s.description for name, s in test_sets.items()},
        seconds={"data": data_seconds, "train": train_seconds, "eval": eval_seconds}, machines=machines)
    written = write_reports(results, out, doc)
    log("wrote " + ", ".join(str(p) for p in written))
    return results
