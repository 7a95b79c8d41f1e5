"""The matching study's tables and verdict, computed from its scores: ``results.json`` and the Markdown section.

Scores are J&F in [0, 1] by test set, matching label and seed; the tables give them in percent as
mean ± sample standard deviation (``ddof = 1``) over seeds. The SM -> BM rows of the Table-5-shaped
table take, on each test set, the K1/K2 of the grid with the highest mean, as the paper tuned them
on its test set. The section is written between :data:`BEGIN` and :data:`END` in the doc; the rest
of the doc is kept.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from emvos.errors import EmvosInputError
from emvos.io.files import write_text_atomically
from emvos.study.config import StudyConfig

#: Markers around the results section of the doc.
BEGIN = "<!-- study:begin -->"
END = "<!-- study:end -->"
#: The rows of the paper's Table 5 (DAVIS 2017 val, J&F %): each matching's own, BM at its best K1/K2.
PAPER = {"sm": 75.7, "bm-kernel": 77.5, "bm-topk": 76.2, "em": 77.9, "sm+em": 79.0}
#: The paper's K1/K2 grid (Table 5).
PAPER_GRID: dict[str, dict[tuple[float, float], float]] = {
    "kernel": {(16, 32): 76.5, (32, 32): 77.5, (64, 32): 76.5, (32, 16): 77.3, (32, 64): 77.3},
    "topk": {(64, 16): 74.4, (128, 16): 76.2, (256, 16): 75.9, (128, 8): 74.5, (128, 32): 75.9},
}
#: Rows of the Table-5-shaped table: version, key, matching.
ROWS = (("Baseline", "sm", "SM"), ("I", "bm-kernel", "SM → BM (kernel), best K1/K2"),
        ("VI", "bm-topk", "SM → BM (top-K), best K1/K2"), ("XI", "em", "EM"), ("XII", "sm+em", "SM + EM"))
#: The paper's ordering, worst to best.
PAPER_ORDER = ("sm", "bm-topk", "bm-kernel", "em", "sm+em")
#: Short names of the rows in sentences.
NAMES = {"sm": "SM", "bm-kernel": "SM→BM kernel", "bm-topk": "SM→BM top-K", "em": "EM", "sm+em": "SM+EM"}
#: Titles of the test sets.
SET_TITLES = {"real": "real (held out)", "distractors": "distractors"}
#: The kinds of bijective matching, as written in the grid.
KIND_NAMES = {"kernel": "kernel", "topk": "top-K"}


def matching_label(kind: str, k1: float, k2: float) -> str:
    """The label of SM -> BM with ``kind`` and K1/K2, e.g. ``bm-kernel-32-32``."""
    return f"bm-{kind}-{k1:g}-{k2:g}"


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of J&F over seeds, in percent (``std`` is NaN for one seed)."""

    mean: float
    std: float
    n: int

    def text(self, seeds: int) -> str:
        """``52.3 ± 1.2``; the number of seeds is added when it is not ``seeds``."""
        value = f"{self.mean:.1f}" + ("" if math.isnan(self.std) else f" ± {self.std:.1f}")
        return value if self.n == seeds else f"{value} (n={self.n})"


def summarize(values: list[float]) -> Summary:
    """Summary of J&F values in [0, 1] (one per seed)."""
    percent = [100 * v for v in values]
    std = statistics.stdev(percent) if len(percent) > 1 else math.nan
    return Summary(statistics.fmean(percent), std, len(percent))


@dataclass(frozen=True)
class Row:
    """A row of the Table-5-shaped table on one test set.

    Attributes:
        summary: J&F over seeds.
        setting: the best ``(K1, K2)`` for the SM -> BM rows, else ``None``.
    """

    summary: Summary
    setting: tuple[float, float] | None = None


def grid_summaries(scores: dict[str, dict[int, float]], config: StudyConfig
                   ) -> list[tuple[str, tuple[float, float], Summary | None]]:
    """Every ``(kind, (K1, K2), summary)`` of the config's grid, in its order (``None``: not evaluated)."""
    rows = []
    for kind in ("kernel", "topk"):
        for k1, k2 in getattr(config.bijective, kind):
            values = scores.get(matching_label(kind, k1, k2), {})
            rows.append((kind, (k1, k2), summarize(list(values.values())) if values else None))
    return rows


def table_rows(scores: dict[str, dict[int, float]], config: StudyConfig) -> dict[str, Row]:
    """The rows of the Table-5-shaped table on one test set, by key; rows without scores are left out.

    ``scores``: matching label -> seed -> J&F. The SM -> BM rows are the grid setting with the highest
    mean (the first of equals, in grid order).
    """
    rows = {key: Row(summarize(list(scores[key].values()))) for key in ("sm", "em", "sm+em") if scores.get(key)}
    grid = grid_summaries(scores, config)
    for kind in ("kernel", "topk"):
        candidates = [(setting, s) for k, setting, s in grid if k == kind and s is not None]
        if candidates:
            setting, best = max(candidates, key=lambda c: c[1].mean)
            rows[f"bm-{kind}"] = Row(best, setting)
    return rows


def _gap(value: float) -> str:
    """``+1.2``; a gap that rounds to zero is ``+0.0``."""
    return f"{round(value, 1) + 0.0:+.1f}"


def ordering_sentence(title: str, rows: dict[str, Row]) -> str:
    """Whether the means on one test set are in the paper's order, and by how much they differ from it."""
    present = [key for key in PAPER_ORDER if key in rows]
    if len(present) < 2:
        return f"**{title}:** fewer than two variants were evaluated; nothing to compare with the paper's ordering."
    mean = {key: rows[key].summary.mean for key in present}
    ours = " < ".join(f"{NAMES[k]} {mean[k]:.1f}" for k in sorted(present, key=lambda k: mean[k]))
    paper = " < ".join(f"{NAMES[k]} {PAPER[k]:.1f}" for k in present)
    pairs = list(combinations(present, 2))  # (a, b): the paper has a below b
    agreeing = sum(mean[a] < mean[b] for a, b in pairs)
    if agreeing == len(pairs):
        verdict = "agrees with the paper's ordering"
    elif agreeing == 0:
        verdict = "is the reverse of the paper's ordering"
    else:
        verdict = "does not agree with the paper's ordering"
    text = (f"**{title}:** our ordering is {ours}; it {verdict} ({paper}): {agreeing} of {len(pairs)} pairs are in "
            f"the paper's order.")
    if "sm" in mean and len(present) > 1:
        gains = ", ".join(f"{NAMES[k]} {_gap(mean[k] - mean['sm'])} (paper {_gap(PAPER[k] - PAPER['sm'])})"
                          for k in present if k != "sm")
        text += f" Over SM, in J&F points: {gains}."
    stds = [rows[k].summary.std for k in present if not math.isnan(rows[k].summary.std)]
    if stds:
        text += (f" The standard deviation over seeds is {min(stds):.1f} to {max(stds):.1f} points, so gaps smaller "
                 "than that are within the noise of this budget.")
    return text


@dataclass(frozen=True)
class StudyResults:
    """What a study produced, enough to write its reports.

    Attributes:
        command: the command line that runs the study.
        config: the study's config.
        scores: test set -> matching label -> seed -> J&F in [0, 1].
        test_sets: test set -> one line saying what it is.
        seconds: wall seconds of ``data``, ``train`` and ``eval``, summed over every step (resumed ones too).
        machines: the machines the runs were trained on.
    """

    command: str
    config: StudyConfig
    scores: dict[str, dict[str, dict[int, float]]]
    test_sets: dict[str, str]
    seconds: dict[str, float]
    machines: list[str]

    def to_json(self) -> dict[str, Any]:
        """``results.json``: the inputs, every score, and the tables and sentences computed from them."""
        tables = {name: table_rows(self.scores[name], self.config) for name in self.test_sets}
        return {
            "command": self.command,
            "config": self.config.to_dict(),
            "test_sets": self.test_sets,
            "seconds": self.seconds,
            "machines": self.machines,
            "scores": {name: {label: {str(seed): v for seed, v in by_seed.items()} for label, by_seed in s.items()}
                       for name, s in self.scores.items()},
            "table": {name: {key: {"mean": row.summary.mean, "std": _number(row.summary.std), "n": row.summary.n,
                                   "k1_k2": list(row.setting) if row.setting else None}
                             for key, row in rows.items()} for name, rows in tables.items()},
            "ordering": {name: ordering_sentence(SET_TITLES.get(name, name), rows) for name, rows in tables.items()},
        }


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _cell(row: Row | None, seeds: int) -> str:
    if row is None:
        return "—"
    text = row.summary.text(seeds)
    return f"{text} ({row.setting[0]:g}/{row.setting[1]:g})" if row.setting else text


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def render_section(results: StudyResults) -> str:
    """The Markdown results section (without the markers)."""
    config, names = results.config, list(results.test_sets)
    seeds = len(config.seeds)
    tables = {name: table_rows(results.scores[name], config) for name in names}
    header = " | ".join(f"{SET_TITLES.get(n, n)}: J&F" for n in names)
    lines = [
        "## Results: SM, BM and EM with our own runs (Table 5)",
        "",
        "*Written by the command below from its results (`results.json` in its output folder); "
        "do not edit by hand.*",
        "",
        "```bash",
        results.command,
        "```",
        "",
        f"Networks with surjective (SM), equalized (EM) and both (SM+EM) matching were trained with the same "
        f"data, recipe and budget, once per seed (seeds {', '.join(map(str, config.seeds))}), and segmented two "
        "test sets from their first-frame masks:",
        "",
        *(f"- **{SET_TITLES.get(n, n)}**: {results.test_sets[n]}." for n in names),
        "",
        f"J&F in %, mean ± sample standard deviation over the {seeds} seeds. The SM → BM rows are the SM "
        "networks with bijective matching replacing SM at test time, at the K1/K2 (in brackets) of the grid below "
        "with the highest mean on that test set — tuned on the test set, as the paper did. The paper's numbers are "
        "on DAVIS 2017 val, with a DenseNet-121 trained on COCO pseudo-videos and then DAVIS 2017 at 384×384, so "
        "only the ordering and the gaps are comparable.",
        "",
        f"| Version | Matching | {header} | paper |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for version, key, matching in ROWS:
        cells = " | ".join(_cell(tables[n].get(key), seeds) for n in names)
        best = {"bm-kernel": " (32/32)", "bm-topk": " (128/16)"}.get(key, "")
        lines.append(f"| {version} | {matching} | {cells} | {PAPER[key]:.1f}{best} |")
    lines += ["", "**Does our ordering agree with the paper's?**", ""]
    lines += [f"- {ordering_sentence(SET_TITLES.get(n, n), tables[n])}" for n in names]
    lines += ["", "### Sensitivity of bijective matching to K1 / K2", "",
              "The SM networks with each bijective setting (K1 against the first frame, K2 against the previous "
              "one; kernel: standard deviation in stride-16 cells, top-K: query pixels kept, as in the paper), "
              "J&F in %; the best of each kind in bold. Below the paper's 480p the stride-16 grid has fewer cells, "
              "so the same K filters less.", "",
              f"| BM | K1 | K2 | {' | '.join(SET_TITLES.get(n, n) for n in names)} | paper |",
              "|---|---|---|" + "---|" * len(names) + "---|"]
    grids = {n: grid_summaries(results.scores[n], config) for n in names}
    for index, (kind, (k1, k2), _) in enumerate(grids[names[0]] if names else []):
        texts = []
        for n in names:
            cell = grids[n][index][2]
            best_row = tables[n].get(f"bm-{kind}")
            text = "—" if cell is None else cell.text(seeds)
            texts.append(f"**{text}**" if best_row is not None and best_row.setting == (k1, k2) else text)
        paper = PAPER_GRID[kind].get((k1, k2))
        lines.append(f"| {KIND_NAMES[kind]} | {k1:g} | {k2:g} | {' | '.join(texts)} | "
                     f"{'—' if paper is None else f'{paper:.1f}'} |")
    lines += ["", *_budget_lines(results)]
    return "\n".join(lines) + "\n"


def _budget_lines(results: StudyResults) -> list[str]:
    config, train = results.config, results.config.train
    model = train.model
    seconds = results.seconds
    total = sum(seconds.values())
    runs = len(config.variants) * len(config.seeds)
    stages = "; ".join(
        f"{s.name} ({s.data.kind} at `{s.data.root or 'no files'}`): {s.iterations} iterations of {s.batch_size} "
        f"clips of {s.clip_len} frames, {s.crop}×{s.crop} crops, Adam lr {s.lr:g}" for s in train.stages)
    grid = len(config.bijective.kernel) + len(config.bijective.topk)
    widths = "/".join(map(str, model.decoder_widths)) if model.decoder_widths else "default"
    return [
        "### Budget",
        "",
        "| | |",
        "|---|---|",
        f"| network | {model.encoder} encoder (frozen, ImageNet weights), keys of {model.key_channels or 'default'} "
        f"channels, decoder widths {widths}; equalized keys calibrated to logit std {train.em_logit_std:g} "
        "(networks with EM) |",
        f"| training, per run | {stages}; swap-and-attach p = {train.swap_attach_p:g}; "
        f"{train.total_iterations} iterations in all |",
        f"| runs | {len(config.variants)} variants ({', '.join(config.variants)}) × {len(config.seeds)} seeds = "
        f"{runs} runs, {runs * train.total_iterations} iterations |",
        f"| evaluation | every network on both test sets with its own matching; SM networks also with {grid} "
        "bijective settings |",
        f"| wall time | {_minutes(total)}: data {_minutes(seconds.get('data', 0))}, training "
        f"{_minutes(seconds.get('train', 0))}, evaluation {_minutes(seconds.get('eval', 0))} (summed over every "
        "step, resumed ones included) |",
        f"| machine | {'; '.join(results.machines) or 'unknown'}; training on {train.device} with "
        f"{train.threads or 'all'} PyTorch thread(s) and {train.workers} loader process(es), segmenting with "
        f"{config.threads or 'all'} thread(s) |",
    ]


def _marker_line(marker: str, text: str) -> re.Match[str] | None:
    """The first line of ``text`` that is ``marker`` alone (a marker quoted in prose does not count)."""
    return re.search(rf"^{re.escape(marker)}[ \t]*$", text, flags=re.MULTILINE)


def replace_section(text: str, section: str) -> str:
    """``text`` with the lines from :data:`BEGIN` to :data:`END` replaced by ``section`` (appended if absent).

    The markers count only on lines of their own.

    Raises:
        EmvosInputError: only one marker, or the end before the beginning.
    """
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    start, end = _marker_line(BEGIN, text), _marker_line(END, text)
    if start is None and end is None:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    if start is None or end is None or end.start() < start.start():
        raise EmvosInputError(f"the doc's study markers are broken: it needs a line {BEGIN}, later a line {END}")
    return text[:start.start()] + block + text[end.end():]


def write_reports(results: StudyResults, out: Path, doc: Path | None = None) -> list[Path]:
    """Write ``OUT/results.json``, ``OUT/matching-study.md`` and the doc's section; returns the files written."""
    section = render_section(results)
    written = [out / "results.json", out / "matching-study.md"]
    write_text_atomically(written[0], json.dumps(results.to_json(), indent=1) + "\n")
    write_text_atomically(written[1], f"{BEGIN}\n{section}{END}\n")
    if doc is not None:
        write_text_atomically(doc, replace_section(doc.read_text(encoding="utf-8") if doc.is_file() else "", section))
        written.append(doc)
    return written
