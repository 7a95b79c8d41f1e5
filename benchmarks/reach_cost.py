"""Time :func:`emvos.inference.reach.within_reach`, the work ``--reach`` adds to each frame.

At 480p (a 480 x 864 working size, the stride-16 grid 30 x 54), with 1 and with 7 objects, on
random probabilities (the cost does not depend on them)::

    python benchmarks/reach_cost.py

prints the median of 50 calls for each object count, after 5 warm-up calls.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from emvos.inference.reach import within_reach


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="30x54", help="stride-16 grid, HxW (default 30x54: 480p)")
    parser.add_argument("--objects", default="1,7", help="object counts (comma-separated)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.grid.split("x"))
    for objects in (int(v) for v in args.objects.split(",")):
        probs = torch.rand(objects, 2, 16 * h, 16 * w)
        prev = torch.rand(objects, 2, h * w)
        times = []
        for i in range(55):
            start = time.perf_counter()
            within_reach(probs, prev, (h, w), 0.25)
            if i >= 5:
                times.append(time.perf_counter() - start)
        print(f"{objects} object(s): {1000 * statistics.median(times):.2f} ms per frame")


if __name__ == "__main__":
    main()
