"""Time emvos's DAVIS evaluation and, optionally, the official DAVIS toolkit on the same results.

emvos is timed in this process (:func:`emvos.eval.davis.evaluate_results`, best of ``--repeat``
runs, with ``--workers`` processes). With ``--toolkit PATH`` (a local checkout of
``davisvideochallenge/davis2017-evaluation``, not shipped with emvos), the toolkit's
``DAVISEvaluation(...).evaluate(RESULTS)`` is timed once in a subprocess run by
``--toolkit-python`` (an interpreter with the toolkit's requirements: numpy, Pillow, opencv,
scikit-image, scipy, tqdm), and the ratio of the times and the largest difference between the two
sets of global numbers are printed.

Both wall-clock and CPU time (user + system, this process and its children) are reported: the
toolkit runs in one process, emvos in a pool, so on a busy machine the CPU ratio is the steadier
of the two. Nothing is written into RESULTS.

The toolkit only knows the DAVIS-2017 layout (``ImageSets/2017``) and scores every object id, so
for DAVIS-2016 results give it a copy of the ground truth and results binarised to 0/1 and compare
with ``--year 2016`` runs of emvos separately.

Example::

    python benchmarks/eval_speed.py RESULTS --davis-root DAVIS --split val --repeat 3 \\
        --toolkit ../davis2017-evaluation --toolkit-python ../davis-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from emvos.eval.davis import GLOBAL_COLUMNS, YEARS, available_cpus, evaluate_results

#: Run by --toolkit-python: argv = toolkit checkout, DAVIS root, results, split, sequences ("" = all).
#: Prints one JSON line: the seconds spent in evaluate() and the global numbers in GLOBAL_COLUMNS order.
TOOLKIT_RUNNER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from davis2017.evaluation import DAVISEvaluation
root, results, split, sequences = sys.argv[2:6]
start = time.perf_counter()
evaluation = DAVISEvaluation(davis_root=root, task="semi-supervised", gt_set=split,
                             sequences=sequences.split(",") if sequences else "all")
scores = evaluation.evaluate(results)
seconds = time.perf_counter() - start
j, f = scores["J"], scores["F"]
row = [(np.mean(j["M"]) + np.mean(f["M"])) / 2, np.mean(j["M"]), np.mean(j["R"]), np.mean(j["D"]),
       np.mean(f["M"]), np.mean(f["R"]), np.mean(f["D"])]
print(json.dumps({"seconds": seconds, "global": [float(v) for v in row]}))
"""


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_emvos(args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """Best wall time, CPU time of that run, and global numbers of emvos's evaluation."""
    sequences = args.sequences.split(",") if args.sequences else None
    best_wall, best_cpu, numbers = float("inf"), 0.0, []
    for _ in range(args.repeat):
        cpu_start, wall_start = cpu_seconds(), time.perf_counter()
        result = evaluate_results(
            args.results,
            args.davis_root,
            year=args.year,
            split=args.split,
            sequences=sequences,
            workers=args.workers,
        )
        wall, cpu = time.perf_counter() - wall_start, cpu_seconds() - cpu_start
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
        numbers = list(result.global_row().values())
    return best_wall, best_cpu, numbers


def time_toolkit(args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """Wall time of ``evaluate()``, CPU time of the whole subprocess, and the toolkit's global numbers."""
    command = [
        args.toolkit_python,
        "-c",
        TOOLKIT_RUNNER,
        str(Path(args.toolkit).resolve()),
        str(Path(args.davis_root).resolve()),
        str(Path(args.results).resolve()),
        args.split,
        args.sequences or "",
    ]
    cpu_start = cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu = cpu_seconds() - cpu_start
    if completed.returncode != 0:
        sys.exit(f"eval_speed: the toolkit failed:\n{completed.stdout}{completed.stderr}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return report["seconds"], cpu, report["global"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="folder holding <sequence>/<frame>.png result masks")
    parser.add_argument("--davis-root", required=True, help="DAVIS folder (Annotations/480p, ImageSets)")
    parser.add_argument("--year", type=int, choices=YEARS, default=2017)
    parser.add_argument("--split", default="val")
    parser.add_argument("--sequences", help="comma-separated sequences instead of the split's")
    parser.add_argument("--workers", type=int, help="emvos worker processes (default: number of CPUs)")
    parser.add_argument("--repeat", type=int, default=3, help="emvos runs; the fastest counts (default: 3)")
    parser.add_argument("--toolkit", help="checkout of davis2017-evaluation to time as well")
    parser.add_argument("--toolkit-python", default=sys.executable, help="interpreter with the toolkit's requirements")
    args = parser.parse_args()
    if args.toolkit and args.year != 2017:
        parser.error("the toolkit evaluates DAVIS-2017 layouts only; see the module docstring for 2016")
    if args.toolkit and not (Path(args.toolkit) / "davis2017" / "evaluation.py").is_file():
        parser.error(f"{args.toolkit} is not a davis2017-evaluation checkout (no davis2017/evaluation.py)")

    workers = args.workers or available_cpus()
    wall, cpu, ours = time_emvos(args)
    print(f"emvos:   {wall:8.2f} s wall (best of {args.repeat}), {cpu:8.2f} s CPU, {workers} workers")
    if not args.toolkit:
        return 0
    toolkit_wall, toolkit_cpu, theirs = time_toolkit(args)
    print(f"toolkit: {toolkit_wall:8.2f} s wall,            {toolkit_cpu:8.2f} s CPU, 1 process")
    print(f"speed-up: {toolkit_wall / wall:.1f}x wall, {toolkit_cpu / cpu:.1f}x CPU")
    differences = {name: abs(a - b) for name, a, b in zip(GLOBAL_COLUMNS, ours, theirs, strict=True)}
    print("largest |emvos - toolkit| over the global numbers: " + f"{max(differences.values()):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
