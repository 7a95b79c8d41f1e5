"""One ``emvos speed`` run: the measurements in order, the JSON summary kept up to date after each.

:class:`SpeedRun` measures the machine's peak, then for each model its FLOPs and every mode's cells,
the video-length sweep and the DAVIS scores, then the official implementation; a part that fails
is noted in the summary and the run goes on.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from emvos.benchmarking.measure import FlopCount, count_flops, machine_info, mask_agreement, measure_peaks, time_model
from emvos.benchmarking.memory import cell_memory, reset_peak_rss, reset_peak_vram
from emvos.benchmarking.official import time_official_isolated
from emvos.benchmarking.report import write_outputs
from emvos.benchmarking.scenes import SceneFiles
from emvos.benchmarking.settings import (
    DEFAULT_MODE,
    MODES,
    REFERENCE_MODE,
    DavisSubset,
    ModelSpec,
    SweepSettings,
    describe_weights,
    modes_for,
)
from emvos.errors import EmvosInputError
from emvos.eval.benchmark import segment_sequence
from emvos.eval.davis import RESOLUTION, evaluate_results
from emvos.eval.official import import_official
from emvos.inference.predictor import VideoPredictor
from emvos.model.network import EMVOS
from emvos.runtime import freed_memory_kept, huge_pages_enabled


class SpeedRun:
    """One ``emvos speed`` run: measures in order and keeps the JSON summary up to date in ``out``.

    Args:
        settings: the sweep.
        models: the networks to time, by key (``paper`` is the one compared with the official code;
            the video-length sweep uses ``shipped``, else the first).
        device: where to run.
        out: output folder (``speed.json``, ``speed.csv``, scratch files while running).
        command: the command line recorded in the summary.
        official_repo: a checkout of the official EMVOS code to time side by side.
        davis: DAVIS sequences to score each mode on (models with trained weights only).
        log: progress lines (``None``: silent).
    """

    def __init__(self, settings: SweepSettings, models: dict[str, ModelSpec], device: torch.device, out: Path,
                 command: str, official_repo: Path | None = None, davis: DavisSubset | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.models = models
        self.device = device
        self.out = out
        self.official_repo = official_repo
        if official_repo is not None and "paper" not in models:
            raise EmvosInputError("--official-repo compares with the paper model; add paper to --models")
        if official_repo is not None:
            import_official(official_repo)  # a wrong checkout fails now, in one line, not after the sweep
        self.davis = davis
        self._log = log
        self.modes = modes_for(device, settings.modes)
        self.start = time.perf_counter()
        self.summary: dict[str, Any] = {
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device),
            "settings": {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
                         "modes": self.modes, "reference_mode": REFERENCE_MODE, "default_mode": DEFAULT_MODE},
            "models": {},
            "peak": {},
            "flops": [],
            "cells": [],
            "official": None,
            "lengths": None,
            "davis": None,
            "notes": [],
            "elapsed_s": 0.0,
        }

    def log(self, text: str) -> None:
        """Pass a progress line, prefixed with the minutes since the run started, to the run's logger."""
        if self._log is not None:
            minutes = (time.perf_counter() - self.start) / 60
            self._log(f"[{minutes:6.1f} min] {text}")

    def note(self, text: str) -> None:
        """Add a remark to the summary (and the log)."""
        self.summary["notes"].append(text)
        self.log(text)

    @contextlib.contextmanager
    def survive(self, what: str) -> Iterator[None]:
        """Run a part of a long sweep; should it fail (``torch.compile`` without a compiler...), note it, go on."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - one failed mode must not cost the hours of the others
            first_line = (str(exc).splitlines() or [""])[0]
            self.note(f"{what} failed and was skipped: {type(exc).__name__}: {first_line}")

    def save(self) -> None:
        """Write ``speed.json`` and ``speed.csv`` as they stand."""
        self.summary["elapsed_s"] = time.perf_counter() - self.start
        write_outputs(self.summary, self.out)

    def run(self) -> dict[str, Any]:
        """Measure everything, then remove the scratch folder; returns the summary."""
        self.files = SceneFiles(self.out / "work", max(self.settings.objects))
        self.log(f"peak throughput of {self.device} ...")
        peak = measure_peaks(self.device, 0.2 if self.settings.small_kernels else 2.0, self.settings.small_kernels)
        self.summary["peak"] = peak
        if self.settings.modes is None and self.device.type == "cpu" and peak["bf16"] < peak["fp32"]:
            slow = [m for m in self.modes if MODES[m].precision == "bf16"]
            self.modes = [m for m in self.modes if m not in slow]
            self.summary["settings"]["modes"] = self.modes
            self.note(f"this CPU runs bf16 at {peak['bf16']:.3g} GFLOP/s against {peak['fp32']:.3g} in fp32 (no native "
                      f"bf16), so {', '.join(slow)} were skipped; --modes runs them anyway")
        self.save()
        length_model = "shipped" if "shipped" in self.models else next(iter(self.models))
        for key, spec in self.models.items():
            network = spec.build()
            self.summary["models"][key] = {
                "title": spec.title,
                "config": network.config.to_dict(),
                "weights": describe_weights(spec.checkpoint),
                "parameters": sum(p.numel() for p in network.parameters()),
            }
            if spec.checkpoint is None:
                self.note(f"{key}: random weights (speed does not depend on them; masks do)")
            self.sweep(key, network)
            if key == length_model and self.settings.lengths:
                self.length_sweep(key, network)
            if self.davis is not None:
                self.score_davis(key, spec, network, self.davis)
            del network
        if self.official_repo is not None:
            with self.survive("the official implementation"):
                self.time_official_code(self.official_repo)
        shutil.rmtree(self.files.root, ignore_errors=True)
        self.save()
        return self.summary

    def sweep(self, key: str, network: EMVOS) -> None:
        """FLOPs, then every mode over the objects x resolutions grid."""
        s = self.settings
        flops: dict[tuple[int, int], FlopCount] = {}
        for height in s.resolutions:
            for objects in s.objects:
                count = count_flops(network, self.device, self.files.scene(height), objects, height)
                flops[height, objects] = count
                self.summary["flops"].append({
                    "model": key, "resolution": height, "objects": objects,
                    "gflops_first_frame": count.first / 1e9, "gflops_per_frame": count.frame / 1e9,
                    "encoder_gflops": count.encoder / 1e9, "decoder_gflops": count.decoder / 1e9,
                    "other_gflops": (count.frame - count.encoder - count.decoder) / 1e9,
                })
                self.log(f"{key} {height}p {objects} object(s): {count.frame / 1e9:.1f} GFLOPs per frame")
        self.save()
        outputs = self.files.root / "cells" / key
        for mode_name in self.modes:
            with self.survive(f"{key}: mode {mode_name}"):
                self.sweep_mode(key, network, mode_name, flops, outputs)
        shutil.rmtree(outputs, ignore_errors=True)

    def sweep_mode(self, key: str, network: EMVOS, mode_name: str, flops: dict[tuple[int, int], FlopCount],
                   outputs: Path) -> None:
        """Every cell of one mode; the end-to-end PNGs go to ``outputs/<mode>/<cell>``.

        Compiled and graphed modes get one more warm-up chunk: the first frames of a new shape recompile,
        and the first propagated frame of a video captures its graph.
        """
        s = self.settings
        mode = MODES[mode_name]
        cell_settings = replace(s, warmup=s.warmup + 1) if mode.compile or mode.graphs else s
        predictor = VideoPredictor(network, device=self.device, resolution=s.resolutions[0],
                                   precision=mode.precision, optimize=mode.optimize, compile=mode.compile,
                                   cuda_graphs=mode.graphs, lookahead=mode.lookahead)
        for height in s.resolutions:
            predictor.resolution = height
            for objects in s.objects:
                cell_dir = outputs / mode_name / f"{height}p-{objects}"
                row = self.run_cell(predictor, height, objects, cell_dir, cell_settings)
                count = flops[height, objects]
                achieved = count.frame * row["frames"] / row["model_seconds"] / 1e9
                peak = self.summary["peak"][mode.precision]
                agreement, compared = (mask_agreement(outputs / REFERENCE_MODE / cell_dir.name, cell_dir)
                                       if mode_name != REFERENCE_MODE else (None, 0))
                row.update(model=key, mode=mode_name, gflops_per_frame=count.frame / 1e9, gflops_per_s=achieved,
                           peak_fraction=achieved / peak, agreement=agreement, agreement_frames=compared)
                self.summary["cells"].append(row)
                self.log(f"{key} {mode_name:<12} {height}p {objects} obj: model {row['model_fps']:.2f} fps, "
                         f"end to end {row['end_to_end_fps']:.2f} fps, {100 * row['peak_fraction']:.0f} % of "
                         f"peak, {row['peak_rss_mb']:.0f} MiB")
                self.save()

    def run_cell(self, predictor: VideoPredictor, height: int, objects: int, cell_dir: Path,
                 s: SweepSettings) -> dict[str, Any]:
        """Model-only then end-to-end timing of one cell, with its peak memory."""
        video = self.files.video(height, 1 + s.max_frames)
        mask = self.files.mask(height, objects)
        reset_peak_rss()
        reset_peak_vram(self.device)
        model = time_model(predictor, self.files.scene(height), objects, s)
        e2e = segment_sequence(predictor, video, mask, cell_dir, max_frames=1 + model.frames)
        return {"resolution": height, "objects": objects, "frames": model.frames, "model_seconds": model.seconds,
                "model_fps": model.frames / model.seconds, "end_to_end_frames": e2e.frames,
                "end_to_end_seconds": e2e.total_seconds, "end_to_end_fps": e2e.frames / e2e.total_seconds,
                **cell_memory(self.device)}

    def length_sweep(self, key: str, network: EMVOS) -> None:
        """End to end over videos of every length (fp32, 1 object, the smallest resolution): peak RSS of each."""
        s = self.settings
        height = min(s.resolutions)
        lengths = sorted(s.lengths)
        self.log(f"video-length sweep: writing a {lengths[-1]}-frame {height}p video ...")
        video = self.files.video(height, lengths[-1])
        mask = self.files.mask(height, 1)
        predictor = VideoPredictor(network, device=self.device, resolution=height)
        out = self.files.root / "lengths"
        segment_sequence(predictor, video, mask, out / "warmup", max_frames=s.warmup + 1)
        rows = []
        for length in lengths:
            reset_peak_rss()
            reset_peak_vram(self.device)
            timing = segment_sequence(predictor, video, mask, out / str(length), max_frames=length)
            rows.append({"frames": timing.frames, "model_fps": timing.frames / timing.model_seconds,
                         "end_to_end_fps": timing.frames / timing.total_seconds, **cell_memory(self.device)})
            shutil.rmtree(out / str(length), ignore_errors=True)
            self.log(f"{key} {length} frames: end to end {rows[-1]['end_to_end_fps']:.2f} fps, "
                     f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MiB")
        self.summary["lengths"] = {"model": key, "resolution": height, "objects": 1, "mode": DEFAULT_MODE, "rows": rows,
                                   "rss_ratio": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]}
        self.save()

    def score_davis(self, key: str, spec: ModelSpec, network: EMVOS, davis: DavisSubset) -> None:
        """J&F of every mode on the DAVIS sequences, for a model with trained weights."""
        if self.summary["davis"] is None:
            self.summary["davis"] = {"root": str(davis.root), "year": davis.year, "split": davis.split,
                                     "sequences": list(davis.sequences), "rows": []}
        if spec.checkpoint is None:
            self.note(f"{key}: no J&F (random weights)")
            return
        for mode_name in self.modes:
            with self.survive(f"{key}: J&F of mode {mode_name}"):
                self.score_mode(key, network, mode_name, davis)

    def score_mode(self, key: str, network: EMVOS, mode_name: str, davis: DavisSubset) -> None:
        """Segment the DAVIS sequences in one mode and score them."""
        mode = MODES[mode_name]
        predictor = VideoPredictor(network, device=self.device, precision=mode.precision, optimize=mode.optimize,
                                   compile=mode.compile, cuda_graphs=mode.graphs, lookahead=mode.lookahead)
        results = self.files.root / "davis" / key / mode_name
        frames = seconds = 0.0
        for name in davis.sequences:
            timing = segment_sequence(predictor, davis.root / "JPEGImages" / RESOLUTION / name,
                                      davis.root / "Annotations" / RESOLUTION / name / "00000.png", results / name)
            frames += timing.frames
            seconds += timing.model_seconds
        result = evaluate_results(results, davis.root, year=davis.year, split=davis.split,
                                  sequences=list(davis.sequences))
        row: dict[str, Any] = {"model": key, "mode": mode_name, "frames": int(frames), "model_fps": frames / seconds,
                               **result.global_row()}
        self.summary["davis"]["rows"].append(row)
        self.log(f"{key} {mode_name}: J&F {100 * row['J&F-Mean']:.2f} on {len(davis.sequences)} sequence(s)")
        self.save()

    def time_official_code(self, repo: Path) -> None:
        """The official implementation (checkout ``repo``) on the same scenes, at the smallest resolution, each
        timing in its own process: as it runs by itself (the speed-ups use it), then, when this run has them,
        with the same process settings as emvos (huge pages, freed memory kept)."""
        height = min(self.settings.resolutions)
        rows = time_official_isolated(repo, height, self.settings.objects, self.settings, self.device, tuned=False)
        for row in rows:
            self.log(f"official {height}p {row['objects']} obj: {row['seconds_per_frame']:.3f} s per frame")
        self.summary["official"] = {"source": f"this run: {repo}", "resolution": height,
                                    "seconds_per_frame": {r["objects"]: r["seconds_per_frame"] for r in rows},
                                    "rows": rows}
        if huge_pages_enabled() or freed_memory_kept():
            tuned = time_official_isolated(repo, height, self.settings.objects, self.settings, self.device,
                                           tuned=True)
            for row in tuned:
                self.log(f"official {height}p {row['objects']} obj, emvos's process settings: "
                         f"{row['seconds_per_frame']:.3f} s")
            self.summary["official"]["tuned_seconds_per_frame"] = {
                r["objects"]: r["seconds_per_frame"] for r in tuned}
        self.save()

