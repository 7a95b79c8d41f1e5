"""Where a propagated frame's time goes: the network's parts timed one after another.

For the paper model (random weights) or the shipped model, as ``emvos segment`` runs it (the
network prepared for inference, huge pages and kept memory; fp32 unless ``--precision``, on the
CPU unless ``--device``, the GPU synchronised between parts), on frames of the synthetic scene
``emvos speed`` uses: the frame's preparation (resize, pad), the encoder, the key projections and
the decoder's object-independent part, matching against the first and the previous frame, the
per-object decoder, and aggregation with the labels at the frame's size. Then the same frames
through ``VideoPredictor.step`` as a whole, and the encoder's blocks one by one (the shipped
model's EfficientNet-Lite0 stages, or DenseNet-121's). Medians over ``--frames`` frames.

Example::

    python benchmarks/frame_parts.py --model shipped --resolution 480 --threads 2 --frames 20
    python benchmarks/frame_parts.py --model paper --device cuda --precision fp16 --frames 50
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

from emvos.benchmarking.scenes import SyntheticVideo, frame_size  # noqa: E402
from emvos.benchmarking.settings import paper_spec, shipped_spec  # noqa: E402
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # as the emvos command sets it
    network = (paper_spec if args.model == "paper" else shipped_spec)(None).build()
    predictor = VideoPredictor(network, device=args.device, resolution=args.resolution, precision=args.precision)
    device = predictor.device

    def clock() -> float:
        """Seconds, once the device has finished what was queued."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    model = predictor.model
    scene = SyntheticVideo(frame_size(args.resolution), args.objects)
    state = predictor.init_state()
    predictor.step(state, scene.frame(0), scene.first_mask(args.objects))
    for index in range(1, 4):  # warm-up
        predictor.step(state, scene.frame(index))

    parts: dict[str, list[float]] = collections.defaultdict(list)
    blocks = encoder_blocks(model.encoder)
    starts: dict[str, float] = {}
    timing_blocks = [False]  # the blocks are timed in a pass of their own: their clocks wait for the GPU
    for name, block in blocks:
        block.register_forward_pre_hook(
            lambda m, i, name=name: starts.__setitem__(name, clock()) if timing_blocks[0] else None)
        block.register_forward_hook(
            lambda m, i, o, name=name: parts[name].append(clock() - starts[name]) if timing_blocks[0] else None)
    with torch.inference_mode(), predictor._autocast():  # the predictor's own precision
        for index in range(4, 4 + args.frames):
            frame = scene.frame(index)
            t0 = clock()
            pixels = torch.from_numpy(frame[None]).to(device).permute(0, 3, 1, 2).float().div_(255)
            image = state.geometry.image(pixels).contiguous(memory_format=predictor.memory_format)
            t1 = clock()
            model.encoder(image)
            t2 = clock()
            query = model.embed(image)  # encoder again, then keys and the decoder's shared part
            t3 = clock()
            first = [model.match(query, group.ref, "first") for group in state.groups]
            t4 = clock()
            prev = model.match(query, state.prev, "prev")
            t5 = clock()
            logits = model.decode(query, {b: torch.cat([f[b] for f in first], 1) for b in first[0]}, prev,
                                  state.prev.mask)
            t6 = clock()
            # The predictor's own last step: aggregation, the previous-frame mask, labels at the frame's size.
            labels, _ = predictor._finish(state, query, torch.softmax(logits[0].float(), dim=1))
            labels.cpu().numpy()
            t7 = clock()
            for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2 - (t2 - t1), t4 - t3, t5 - t4, t6 - t5,
                                             t7 - t6), strict=True):
                parts[part].append(seconds)
            predictor.step(state, frame)
            parts["step, whole"].append(clock() - t7)
            timing_blocks[0] = True
            model.encoder(image)
            timing_blocks[0] = False

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
