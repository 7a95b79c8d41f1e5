"""Throughput of ``emvos batch``: in one process, and on a local Ray instance with 1 and 2 workers.

A folder manifest of the first ``--frames`` frames of ``--videos`` DAVIS sequences (links, not
copies) is segmented by each configuration in turn, ``--rounds`` times (the order reversed every
other round), each run a fresh ``python -m emvos batch`` process writing to a fresh folder: Ray's
startup, the workers' model loading, decoding and PNG writing all count. Reported: the median wall
time and the frames per second of the whole batch. With ``--doc`` the table is written as a
Markdown page with the command that produced it.

Example::

    python benchmarks/batch_throughput.py --davis ../shared/data/davis2016-train --videos 4 --frames 20 \\
        --resolution 240 --rounds 2 --doc docs/batch-throughput.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _page import page_head  # benchmarks/, the script's own folder

#: Configurations: name and the options they add to ``emvos batch``.
CONFIGS = (("one process", []), ("Ray, 1 worker", ["--ray", "--workers", "1"]),
           ("Ray, 2 workers", ["--ray", "--workers", "2"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, required=True, help="a DAVIS root (JPEGImages/480p, Annotations/480p)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--doc", type=Path, default=None, help="write the results as this Markdown page")
    args = parser.parse_args()

    sequences = sorted(p.name for p in (args.davis / "JPEGImages" / "480p").iterdir())[:args.videos]
    times: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        for seq in sequences:
            (videos / seq).mkdir(parents=True)
            for image in sorted((args.davis / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:args.frames]:
                (videos / seq / image.name).symlink_to(image.resolve())
            mask = sorted((args.davis / "Annotations" / "480p" / seq).glob("*.png"))[0]
            (videos / f"{seq}.png").symlink_to(mask.resolve())
        frames = sum(len(list((videos / seq).iterdir())) for seq in sequences)
        started = datetime.now(timezone.utc)
        load_before = os.getloadavg()[0]
        for round_index in range(args.rounds):
            for name, extra in CONFIGS if round_index % 2 == 0 else CONFIGS[::-1]:
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                command = [sys.executable, "-m", "emvos", "batch", str(videos), "--out", str(out), "--resolution",
                           str(args.resolution), "--threads", "1", "--quiet", *extra]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"{name}: exit status {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
                times[name].append(time.perf_counter() - start)
                print(name, f"{times[name][-1]:.1f} s", flush=True)
        load_after = os.getloadavg()[0]

    base = statistics.median(times[CONFIGS[0][0]])
    rows = []
    for name, _ in CONFIGS:
        wall = statistics.median(times[name])
        rows.append(f"| {name} | {wall:.1f} | {frames / wall:.2f} | {base / wall:.2f}x |")
    page = "\n".join([
        *page_head("Throughput of emvos batch", started),
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores; load average {load_before:.1f} before and "
        f"{load_after:.1f} after (other work shares this machine).",
        f"- Work: {len(sequences)} DAVIS sequences ({', '.join(sequences)}), the first {args.frames} frames of each "
        f"({frames} frames), resolution {args.resolution}, PyTorch backend with segment's defaults (test-time "
        f"adaptation to each video's mask included), 1 thread per worker; {args.rounds} "
        "rounds, medians of the whole `emvos batch` process (Ray's startup and each worker's model loading "
        "included).",
        "",
        "| configuration | wall s | frames / s | speed-up over one process |",
        "|---|---|---|---|",
        *rows,
        "",
    ])
    print(page)
    if args.doc is not None:
        args.doc.write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
