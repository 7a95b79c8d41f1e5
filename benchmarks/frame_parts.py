"""Where a propagated frame's time goes: the network's parts timed one after another.

For the paper model (random weights) or the shipped model, as ``emvos segment`` runs it (fp32, the
network prepared for inference, huge pages and kept memory), on frames of the synthetic scene
``emvos speed`` uses: the frame's preparation (resize, pad), the encoder, the key projections and
the decoder's object-independent part, matching against the first and the previous frame, the
per-object decoder, and aggregation with the labels at the frame's size. Then the same frames
through ``VideoPredictor.step`` as a whole, and the encoder's blocks one by one (the shipped
model's EfficientNet-Lite0 stages, or DenseNet-121's). Medians over ``--frames`` frames.

Example::

    python benchmarks/frame_parts.py --model shipped --resolution 480 --threads 2 --frames 20
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from emvos.runtime import keep_freed_memory, use_huge_pages

use_huge_pages()  # before PyTorch allocates its first tensor, as the emvos command does
keep_freed_memory()

import torch  # noqa: E402 - after the allocator settings above

from emvos.eval.speed import SyntheticVideo, frame_size, paper_spec, shipped_spec  # noqa: E402
from emvos.inference.predictor import VideoPredictor  # noqa: E402

PARTS = ("prepare", "encoder", "keys + shared decoder", "match first", "match previous", "decoder",
         "aggregate + labels")


def encoder_blocks(encoder: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The encoder's top-level layers with weights, its ``blocks`` stages split into their blocks (EfficientNet)."""
    layers = []
    for name, module in encoder.named_children():
        if name == "blocks":
            layers += [(f"blocks.{i}.{j}", block) for i, stage in enumerate(module) for j, block in enumerate(stage)]
        elif next(module.parameters(), None) is not None:
            layers.append((name, module))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("paper", "shipped"), default="shipped")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = (paper_spec if args.model == "paper" else shipped_spec)(None).build()
    predictor = VideoPredictor(network, device="cpu", resolution=args.resolution)
    model = predictor.model
    scene = SyntheticVideo(frame_size(args.resolution), args.objects)
    state = predictor.init_state()
    predictor.step(state, scene.frame(0), scene.first_mask(args.objects))
    for index in range(1, 4):  # warm-up
        predictor.step(state, scene.frame(index))

    parts: dict[str, list[float]] = collections.defaultdict(list)
    blocks = encoder_blocks(model.encoder)
    starts: dict[str, float] = {}
    for name, block in blocks:
        block.register_forward_pre_hook(lambda m, i, name=name: starts.__setitem__(name, time.perf_counter()))
        block.register_forward_hook(lambda m, i, o, name=name: parts[name].append(time.perf_counter() - starts[name]))
    with torch.inference_mode():
        for index in range(4, 4 + args.frames):
            frame = scene.frame(index)
            t0 = time.perf_counter()
            pixels = torch.from_numpy(frame[None]).permute(0, 3, 1, 2).float().div_(255)
            image = state.geometry.image(pixels).contiguous(memory_format=predictor.memory_format)
            t1 = time.perf_counter()
            model.encoder(image)
            t2 = time.perf_counter()
            query = model.embed(image)  # encoder again, then keys and the decoder's shared part
            t3 = time.perf_counter()
            first = [model.match(query, group.ref, "first") for group in state.groups]
            t4 = time.perf_counter()
            prev = model.match(query, state.prev, "prev")
            t5 = time.perf_counter()
            logits = model.decode(query, {b: torch.cat([f[b] for f in first], 1) for b in first[0]}, prev,
                                  state.prev.mask)
            t6 = time.perf_counter()
            # The predictor's own last step: aggregation, the previous-frame mask, labels at the frame's size.
            labels, _ = predictor._finish(state, query, torch.softmax(logits[0].float(), dim=1))
            labels.numpy()
            t7 = time.perf_counter()
            for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2 - (t2 - t1), t4 - t3, t5 - t4, t6 - t5,
                                             t7 - t6), strict=True):
                parts[part].append(seconds)
            t8 = time.perf_counter()
            predictor.step(state, frame)
            parts["step, whole"].append(time.perf_counter() - t8)

    def ms(name: str) -> str:
        return f"{statistics.median(parts[name]) * 1000:.1f}"

    print(f"{args.model} model, {args.resolution}p, {args.objects} object(s), {args.threads} thread(s): "
          f"median ms over {args.frames} frames")
    print("| part | ms |\n|---|---|")
    for name in (*PARTS, "step, whole"):
        print(f"| {name} | {ms(name)} |")
    print("\n| encoder block | ms |\n|---|---|")
    for name, _ in blocks:
        print(f"| {name} | {ms(name)} |")


if __name__ == "__main__":
    main()
