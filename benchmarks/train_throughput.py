"""Training iterations per hour of a preset's video stage: decoded frames against cached encoder features.

Runs ``emvos train`` on the ``video`` stage alone of two presets (by default ``emvos-lite``, which
encodes every frame of every clip, and ``emvos-lite-cached``, which reads the frozen encoder's
cached features), ``--iterations`` iterations each, alternating, ``--rounds`` times, with the
presets' own settings (threads, batch size, clip length, crop, compile) and validation off. The
speed is read from ``metrics.csv`` (``it_per_s``, one row per ``--log-every`` iterations); the first
row of each run holds start-up (loading, ``torch.compile``) and is left out. Prints the median of
the remaining rows of each preset, as iterations per hour, and their ratio.

The cached preset's feature cache must exist or it is built by its first run (its start-up, left
out too); ``emvos train --config emvos-lite-cached --build-cache`` builds it beforehand.
``--sequences`` restricts both presets' clips to some training sequences (the cost of an
iteration does not depend on how many there are).

Example::

    python benchmarks/train_throughput.py --iterations 30 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from emvos.train import load_config, save_config


def stage_speeds(preset: str, out: Path, iterations: int, log_every: int, sequences: list[str]) -> list[float]:
    """Iterations per second of each logged window after the first, of one run of the preset's video stage."""
    overrides = [f"stages.video.iterations={iterations}", f"log_every={log_every}", "val.every=0",
                 "tensorboard=false", "save_every=0", f"out={out}"]
    if sequences:
        overrides.append(f"stages.video.data.options.sequences=[{','.join(sequences)}]")
    config = load_config(preset, overrides)
    config.stages = [s for s in config.stages if s.name == "video"]
    save_config(config, out.with_suffix(".yaml"))
    subprocess.run([sys.executable, "-m", "emvos", "train", "--config", str(out.with_suffix(".yaml")), "--quiet"],
                   check=True, env=os.environ.copy())
    with (out / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["it_per_s"]]
    return [float(row["it_per_s"]) for row in rows[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="emvos-lite,emvos-lite-cached", help="two comma-separated presets")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", default="", help="comma-separated training sequences (default: all)")
    args = parser.parse_args()
    presets = args.presets.split(",")
    sequences = [s for s in args.sequences.split(",") if s]
    speeds: dict[str, list[float]] = {p: [] for p in presets}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for preset in presets:
                out = Path(tmp) / f"{preset}-{round_}"
                speeds[preset] += stage_speeds(preset, out, args.iterations, args.log_every, sequences)
                print(f"round {round_ + 1}: {preset}: {[round(s * 3600) for s in speeds[preset]]} it/h so far",
                      file=sys.stderr, flush=True)
    medians = {p: statistics.median(v) * 3600 for p, v in speeds.items()}
    print(f"video stage, median of {args.rounds} alternating runs x {args.iterations} iterations "
          f"(windows of {args.log_every}, first left out):")
    print("| preset | iterations / hour | seconds / iteration |\n|---|---|---|")
    for preset, per_hour in medians.items():
        print(f"| {preset} | {per_hour:,.0f} | {3600 / per_hour:.2f} |")
    first, second = presets
    print(f"ratio {second} / {first}: {medians[second] / medians[first]:.1f}x")


if __name__ == "__main__":
    main()
