"""Time Winograd F(4x4, 3x3) against PyTorch's direct 3x3 convolution at the decoder's sizes.

For each width and level of a 480p frame (stride 4, 8 and 16 of a 480x864 input), one ``width ->
width`` convolution is timed both ways, alternating, on channels-last input; the table gives the
median times and their ratio. ``emvos.model.decoder.WINOGRAD_MIN_WIDTH`` is set from this table on a
2-core CPU; run it on yours to see where the crossover lies there.

Example::

    python benchmarks/winograd.py --widths 32,64,128,256 --threads 2 --repeats 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from emvos.model.winograd import transform_weight, winograd_conv3x3

#: ``(H, W)`` of the decoder's levels for a 480x864 (padded 480p) frame.
LEVELS = ((120, 216), (60, 108), (30, 54))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64,128,256", help="comma-separated channel counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, median of {args.repeats} alternating runs")
    print("| width | level | direct ms | Winograd ms | Winograd / direct |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for width in (int(w) for w in args.widths.split(",")):
            for h, w in LEVELS:
                x = torch.randn(1, width, h, w, generator=generator).contiguous(memory_format=torch.channels_last)
                weight = torch.randn(width, width, 3, 3, generator=generator) / (3 * width**0.5)
                bias = torch.randn(width, generator=generator)
                direct_weight = weight.contiguous(memory_format=torch.channels_last)
                winograd_weight = transform_weight(weight)
                runs = {"direct": partial(F.conv2d, x, direct_weight, bias, padding=1),
                        "winograd": partial(winograd_conv3x3, x, winograd_weight, bias)}
                times: dict[str, list[float]] = {name: [] for name in runs}
                for fn in runs.values():
                    fn()
                for _ in range(args.repeats):
                    for name, fn in runs.items():
                        start = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - start)
                direct, winograd = (statistics.median(times[name]) * 1000 for name in runs)
                print(f"| {width} | {h}x{w} | {direct:.1f} | {winograd:.1f} | {winograd / direct:.2f} |")


if __name__ == "__main__":
    main()
