"""Time ``emvos segment`` with the PyTorch and the onnxruntime backends, whole processes, alternating.

Each round runs both backends once on the first ``--frames`` frames of a DAVIS sequence (their
order swapped every round, so that drifts in the machine's load hit both alike), each as a fresh
``python -m emvos segment`` process: startup, imports, reading frames and writing PNGs included. The
ONNX graphs are exported once beforehand (not timed). Reported: the median wall time of the whole
process, its CPU time (user + system), the frames per second ``segment`` itself prints (its loop,
without startup), and the share of pixels on which the two backends' masks agree. With ``--doc``
the table is written as a Markdown page, with the command that produced it.

Example::

    python benchmarks/onnx_speed.py --davis ../shared/data/davis2016-train --sequence bear --frames 50 \\
        --rounds 3 --threads 1,2 --doc docs/performance-onnx.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
from _page import page_head  # benchmarks/, the script's own folder
from PIL import Image

BACKENDS = ("pytorch", "onnxruntime")
_FPS = re.compile(r"\(([\d.]+) fps\)")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and the fps ``segment`` printed, of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    match = _FPS.search(done.stdout)
    return wall, cpu, float(match.group(1)) if match else float("nan")


def _agreement(a: Path, b: Path) -> float:
    """Share of pixels with the same label in two folders of label PNGs."""
    same = total = 0
    for path in sorted(a.glob("*.png")):
        x, y = np.array(Image.open(path)), np.array(Image.open(b / path.name))
        same += int((x == y).sum())
        total += x.size
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, required=True, help="a DAVIS root (JPEGImages/480p, Annotations/480p)")
    parser.add_argument("--sequence", default="bear")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each for both backends")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--doc", type=Path, default=None, help="write the results as this Markdown page")
    args = parser.parse_args()

    images = sorted((args.davis / "JPEGImages" / "480p" / args.sequence).glob("*.jpg"))[:args.frames]
    mask = sorted((args.davis / "Annotations" / "480p" / args.sequence).glob("*.png"))[0]
    emvos = [sys.executable, "-m", "emvos"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = root / "frames"
        frames.mkdir()
        for image in images:
            (frames / image.name).symlink_to(image.resolve())
        subprocess.run([*emvos, "export", "--onnx", str(root / "onnx")], check=True, capture_output=True)
        # The same computation on both: the exported graphs neither adapt, zoom nor reach, so neither does PyTorch.
        extra = {"pytorch": ["--adapt", "0", "--zoom", "0", "--reach", "0"],
                 "onnxruntime": ["--onnx", str(root / "onnx")]}
        thread_counts = [int(t) for t in args.threads.split(",")]
        cells = [(t, b) for t in thread_counts for b in BACKENDS]
        results: dict[tuple[int, str], list[tuple[float, float, float]]] = {c: [] for c in cells}
        load_before = os.getloadavg()[0]
        started = datetime.now(timezone.utc)
        for round_index in range(args.rounds):
            for threads, backend in cells if round_index % 2 == 0 else cells[::-1]:
                command = [*emvos, "segment", str(frames), "--mask", str(mask), "--out", str(root / backend),
                           "--backend", backend, "--threads", str(threads), "--resolution",
                           str(args.resolution), "--quiet", "--overwrite", *extra[backend]]
                results[threads, backend].append(_run(command))
                print(threads, backend, *(f"{v:.2f}" for v in results[threads, backend][-1]), flush=True)
        load_after = os.getloadavg()[0]
        agreement = _agreement(root / "pytorch", root / "onnxruntime")

    medians = {c: [statistics.median(r[i] for r in results[c]) for i in range(3)] for c in cells}
    rows = []
    for threads in thread_counts:
        pt, ort = medians[threads, "pytorch"], medians[threads, "onnxruntime"]
        rows += [f"| {threads} | {b} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.2f} |"
                 for b, m in (("pytorch", pt), ("onnxruntime", ort))]
        rows.append(f"| {threads} | onnxruntime / pytorch | {ort[0] / pt[0]:.2f}x | {ort[1] / pt[1]:.2f}x | "
                    f"{ort[2] / pt[2]:.2f}x |")
    page = "\n".join([
        *page_head("onnxruntime and PyTorch on the CPU", started),
        f"- Machine: {_cpu_name()}, {os.cpu_count()} cores; load average {load_before:.1f} before and "
        f"{load_after:.1f} after (other work shares this machine: read the CPU time as much as the wall time).",
        f"- Software: PyTorch {version('torch')}, onnxruntime {version('onnxruntime')}, "
        f"Python {platform.python_version()}.",
        f"- Work: `emvos segment` on the first {len(images)} frames of DAVIS `{args.sequence}` "
        f"(1 object), resolution {args.resolution}, no test-time adaptation, zoom or reach "
        "(`--adapt 0 --zoom 0 --reach 0`), "
        f"{args.rounds} rounds, "
        "each running every cell once (the "
        "order reversed every other round); medians. Whole processes: startup, imports, decoding frames and "
        "writing PNGs included.",
        "",
        "| threads | backend | wall s (whole process) | CPU s (user + system) | fps printed by segment (its loop) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"The two backends' masks (last round) agree on {100 * agreement:.3f} % of the pixels.",
        "",
    ])
    print(page)
    if args.doc is not None:
        args.doc.write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
