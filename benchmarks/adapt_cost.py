"""CPU time of test-time adaptation on one annotated frame, its encoder pass and its steps apart.

Counts CPU seconds of this process (``time.process_time``), which other work on a shared machine
disturbs far less than wall-clock time::

    python benchmarks/adapt_cost.py --frame ../shared/data/davis2016-train/JPEGImages/480p/kite-walk/00000.jpg \\
        --mask ../shared/data/davis2016-train/Annotations/480p/kite-walk/00000.png --threads 1 --rounds 2

prints, per round, the CPU seconds of adapting with the reference network's encoder and with the
encoder of the copy prepared for inference (what :class:`~emvos.VideoPredictor` uses): one step
(nearly all of it the variants' encoder pass) and the default number of steps. ``--checkpoint``
and ``--settings`` (JSON, over the settings the model file recommends) time another model or
setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emvos.inference.adapt import AdaptSettings, adapt_network
from emvos.inference.optimize import prepare_for_inference
from emvos.inference.predictor import adapt_settings, load_network
from emvos.io.masks import read_label_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shorter-side", type=int, default=480, help="frame size to adapt at (default 480)")
    parser.add_argument("--steps", type=int, default=AdaptSettings().steps,
                        help="adaptation steps (default: the default)")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--settings", default="{}",
                        help="AdaptSettings fields as JSON, over the model file's (e.g. '{\"absent_p\": 0}')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = load_network(args.checkpoint)
    settings = adapt_settings(args.checkpoint, args.steps, json.loads(args.settings))
    if settings is None:
        parser.error("--steps must be at least 1")
    prepared = prepare_for_inference(network, torch.device("cpu"))
    frame = Image.open(args.frame).convert("RGB")
    factor = args.shorter_side / min(frame.size)
    size = (round(frame.width * factor), round(frame.height * factor))
    pixels = np.array(frame.resize(size, Image.Resampling.BILINEAR))
    labels = np.array(Image.fromarray(read_label_png(args.mask).labels).resize(size, Image.Resampling.NEAREST))
    height, width = (s // network.stride * network.stride for s in labels.shape)
    image = torch.from_numpy(pixels[:height, :width]).permute(2, 0, 1).float() / 255
    ids = torch.from_numpy(labels[:height, :width].astype(np.int64))

    def prepared_encoder(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return prepared.encoder(images.contiguous(memory_format=torch.channels_last))

    print(f"round  encoder    1 step (encoding)  {args.steps} steps")
    for round_ in range(args.rounds):
        for name, encoder in (("reference", None), ("prepared", prepared_encoder)):
            seconds = []
            for steps in (1, args.steps):
                start = time.process_time()
                adapt_network(network, image, ids, dataclasses.replace(settings, steps=steps), encoder=encoder)
                seconds.append(time.process_time() - start)
            print(f"{round_:5d}  {name:9s}  {seconds[0]:17.2f}  {seconds[1]:13.2f}")


if __name__ == "__main__":
    main()
