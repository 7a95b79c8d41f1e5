"""Time the decoder's CPU algorithms against PyTorch's layers at the decoder's sizes.

For each width and level of a 480p frame (stride 4, 8 and 16 of a 480x864 input), two layers are
timed, alternating, on channels-last input: a ``width -> width`` 3x3 convolution, direct and by
Winograd F(4x4, 3x3) and F(6x6, 3x3); and the level's two-channel upsampling (x4 at stride 4, x2 above), by
``nn.ConvTranspose2d`` and by :class:`emvos.model.decoder.FoldConvTranspose2d`. The tables give the
median times and their ratios. ``emvos.model.decoder.WINOGRAD_MIN_WIDTH`` is set from them on a
2-core CPU; run it on yours to see where the crossover lies there.

Example::

    python benchmarks/winograd.py --widths 32,64,128,256 --threads 2 --repeats 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from emvos.model.decoder import FoldConvTranspose2d
from emvos.model.winograd import transform_weight, winograd_conv3x3
from emvos.runtime import keep_freed_memory

#: ``(H, W)`` of the decoder's levels for a 480x864 (padded 480p) frame, and their upsampling factors.
LEVELS = (((120, 216), 4), ((60, 108), 2), ((30, 54), 2))


def median_ms(runs: dict[str, Callable[[], object]], repeats: int) -> list[float]:
    """Median milliseconds of each run, timed in turn ``repeats`` times after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return [statistics.median(times[name]) * 1000 for name in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64,128,256", help="comma-separated channel counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the emvos command does: no page faults for the repeated allocations
    print(f"{args.threads} threads, median of {args.repeats} alternating runs")
    generator = torch.Generator().manual_seed(0)
    conv_rows, up_rows = [], []
    with torch.inference_mode():
        for width in (int(w) for w in args.widths.split(",")):
            for (h, w), scale in LEVELS:
                x = torch.randn(1, width, h, w, generator=generator).contiguous(memory_format=torch.channels_last)
                weight = torch.randn(width, width, 3, 3, generator=generator) / (3 * width**0.5)
                bias = torch.randn(width, generator=generator)
                direct_weight = weight.contiguous(memory_format=torch.channels_last)
                f4, f6 = transform_weight(weight, 4), transform_weight(weight, 6)
                runs = {"direct": partial(F.conv2d, x, direct_weight, bias, padding=1),
                        "F(4)": partial(winograd_conv3x3, x, f4, bias), "F(6)": partial(winograd_conv3x3, x, f6, bias)}
                direct, winograd4, winograd6 = median_ms(runs, args.repeats)
                conv_rows.append(f"| {width} | {h}x{w} | {direct:.1f} | {winograd4:.1f} | {winograd6:.1f} | "
                                 f"{winograd4 / direct:.2f} | {winograd6 / direct:.2f} |")
                up = nn.ConvTranspose2d(width, 2, scale + 2, scale, 1).to(memory_format=torch.channels_last)
                transposed, folded = median_ms({"transposed": partial(up, x),
                                                "fold": partial(FoldConvTranspose2d(up), x)}, args.repeats)
                up_rows.append(f"| {width} | {h}x{w} | x{scale} | {transposed:.1f} | {folded:.1f} | "
                               f"{folded / transposed:.2f} |")
    print("\n".join(["| width | level | direct ms | F(4x4) ms | F(6x6) ms | F(4x4) / direct | F(6x6) / direct |",
                     "|---|---|---|---|---|---|---|",
                     *conv_rows, "", "| width | level | scale | ConvTranspose2d ms | fold ms | fold / transposed |",
                     "|---|---|---|---|---|---|", *up_rows]))


if __name__ == "__main__":
    main()
