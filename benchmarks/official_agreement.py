"""Check that emvos reproduces the official EMVOS implementation's masks, pixel for pixel.

emvos loads the official EMVOS checkpoints (plain state dicts with ``vos.*`` keys) and claims to
reproduce the official code's masks on DAVIS 480p videos (at least 99.9 % identical pixels). This
script re-checks the claim: it runs the official model and emvos's :class:`VideoPredictor` on the
same frames with the same first-frame mask and prints, per sequence, the share of identical pixels.

The official code is not shipped with emvos. Check it out yourself (``github.com/suhwan-cho/EMVOS``)
and pass its ``emvos.py`` with ``--official``; it is imported as it is, without changes (its
``densenet121(pretrained=True)`` is answered with random ImageNet-free weights, as a checkpoint or
the seeded initialisation overwrites them anyway, so nothing is downloaded).

Weights: ``--checkpoint FILE`` loads the official trained weights into both implementations (the
official model with ``load_state_dict``, emvos with :func:`emvos.model.checkpoint.load_model`).
Without it, the official ``EMVOS()`` is built with ``torch.manual_seed(--seed)``, its state dict is
saved to a temporary file and emvos loads that file: random weights make noisy masks, a harsh test
of the arithmetic.

Random weights and rounding: the two implementations compute the same thing in a different order
(emvos decodes all objects in one batch, splits the blend convolution into a shared and a per-object
part, and runs CBAM's channel MLP on the average- and max-pooled vectors together), so their float32
probabilities differ by about 1e-6, which moves next to no pixel when predictions are confident. At
random initialisation, though, the decoder's 256 feature channels swamp its object-specific inputs
(matching scores, previous mask), so with several objects their probabilities often differ by less
than that and rounding decides which object wins a pixel: 0.5 % of the pixels of ``schoolgirls`` at
frame 1, 1 to 2 % by frame 20 as the previous mask feeds the flips back. Two ways to take rounding
out of the comparison: ``--dtype float64`` runs both networks in double precision (the random
weights unchanged), and ``--object-gain G`` multiplies the decoder blend convolutions' weights on
their object-specific input channels by ``G`` before both load them (3 separates the objects and
keeps the masks non-trivial; float32 as usual). Single-object videos need neither.

Protocol, as the official evaluator: frames are read with ``ToTensor`` (``[0, 1]``), masks with PIL
as object ids; ``--year 2016`` binarises them, as the official DAVIS-2016 loader does (which reads
the DAVIS-2017 tree's palette masks: its ``LabelToLongTensor`` maps 255 to 0, so it would erase the
0/255 masks of the DAVIS-2016 release). Videos whose shorter
side is not ``--resolution`` are resized with bicubic ``F.interpolate`` (masks: nearest), unless an
object of a given mask would have fewer than 1000 pixels, in which case both run at the native size.
The official code then returns masks at the working size, emvos at the input size (it resizes its
probabilities back): for resized videos, the table compares emvos's working-size labels (captured
before that resize) with the official masks, and ``--native`` adds a run at the native size, where
the final outputs are compared directly. Frame 0 (the given mask in both) is not counted.

``--mid-video K`` adds a run where the objects with the highest ids (the upper half) are withheld
from frame 0 and given at frame ``K`` instead, from frame ``K``'s annotation, as new objects
(official: a ``given_masks`` entry at ``K``; emvos: ``step(..., mask=...)``). Sequences with a
single object skip it.

Examples::

    # single object, DAVIS 2016 layout (854x480), first 20 frames, random weights (seed 0)
    python benchmarks/official_agreement.py --official ../EMVOS/emvos.py \\
        --davis-root ../shared/data/davis2016-train --year 2016 --sequences bear bmx-bumps breakdance-flare --frames 20

    # several objects, resized to 480p and at the native size, plus objects given at frame 8
    # (add --dtype float64 or --object-gain 3: see "Random weights and rounding")
    python benchmarks/official_agreement.py --official ../EMVOS/emvos.py \\
        --davis-root ../shared/data/davis2017-sample --sequences schoolgirls --frames 20 --native --mid-video 8

    # the official trained weights
    python benchmarks/official_agreement.py --official ../EMVOS/emvos.py --checkpoint coco_davis_best.pth \\
        --davis-root ../DB/DAVIS --year 2017 --sequences bike-packing dogs-jump

The exit status is 1 when a comparison falls below ``--threshold`` (99.9 %).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from emvos.errors import EmvosInputError
from emvos.eval.official import build_official, import_official
from emvos.inference.geometry import Geometry
from emvos.inference.predictor import VideoPredictor
from emvos.model.checkpoint import load_model

#: The official evaluator keeps the native size when an object would have fewer pixels than this.
TINY_OBJECT_PIXELS = 1000


def build_models(official: ModuleType, checkpoint: Path | None, seed: int, object_gain: float, tmp: Path,
                 dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official model and emvos's network, with the same weights, computing in ``dtype``."""
    model = build_official(official, seed)
    if checkpoint is None:
        with torch.no_grad():
            for i in (1, 2, 3):  # input channels 256.. are the object-specific ones
                getattr(model.vos.decoder, f"blend{i}").conv.weight[:, 256:] *= object_gain
        checkpoint = tmp / f"official_seed{seed}.pth"
        torch.save(model.state_dict(), checkpoint)
    else:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval().to(dtype), load_model(checkpoint, device="cpu").to(dtype)


def read_sequence(root: Path, name: str, frames: int, binarise: bool) -> tuple[list[Image.Image], list[np.ndarray]]:
    """The first ``frames`` frames (0: all) of a DAVIS sequence and their annotations (object ids)."""
    image_files = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
    if not image_files:
        sys.exit(f"official_agreement: no frames in {root / 'JPEGImages' / '480p' / name}")
    if frames:
        image_files = image_files[:frames]
    images, labels = [], []
    for f in image_files:
        images.append(Image.open(f).convert("RGB"))
        ann = np.array(Image.open(root / "Annotations" / "480p" / name / f"{f.stem}.png"))
        labels.append((ann != 0).astype(np.uint8) if binarise else ann.astype(np.uint8))
    return images, labels


def working_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The official evaluator's resized ``(H, W)`` (shorter side ``resolution``)."""
    h, w = size
    if not resolution or min(h, w) == resolution:
        return size
    if h > w:
        return int(resolution / w * h), resolution
    return resolution, int(resolution / h * w)


def resize_inputs(imgs: torch.Tensor, given: dict[int, torch.Tensor],
                  work: tuple[int, int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Resize a ``(1, L, 3, H, W)`` video (bicubic) and its ``(1, 1, H, W)`` masks (nearest)."""
    if tuple(imgs.shape[-2:]) == work:
        return imgs, given
    imgs = F.interpolate(imgs[0], size=work, mode="bicubic", align_corners=False)[None]
    given = {i: F.interpolate(m.float(), size=work, mode="nearest").long() for i, m in given.items()}
    return imgs, given


def has_tiny_object(given: dict[int, torch.Tensor]) -> bool:
    """Whether an object of a given mask has fewer than :data:`TINY_OBJECT_PIXELS` pixels."""
    return any(int((m == k).sum()) < TINY_OBJECT_PIXELS for m in given.values() for k in m.unique().tolist() if k)


def run_official(model: torch.nn.Module, imgs: torch.Tensor, given: dict[int, torch.Tensor]) -> np.ndarray:
    """``(L, H, W)`` labels from the official model (frame 0: the given mask)."""
    given_masks = [given.get(i) for i in range(imgs.shape[1])]
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        masks = model(imgs.to(dtype), given_masks, None)["masks"]
    return masks[0, :, 0].numpy().astype(np.int64)


@contextlib.contextmanager
def capture_working_labels(store: list[torch.Tensor]) -> Iterator[None]:
    """Record emvos's per-pixel arg-max at the working size, before it resizes back to the input."""
    original = Geometry.restore

    def restore(self: Geometry, probs: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pad
        hp, wp = probs.shape[-2:]
        store.append(probs[0, :, top:hp - bottom, left:wp - right].argmax(dim=0).cpu())
        return original(self, probs)

    Geometry.restore = restore
    try:
        yield
    finally:
        Geometry.restore = original


def run_emvos(predictor: VideoPredictor, images: list[Image.Image], given: dict[int, np.ndarray],
              given_work: dict[int, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """emvos's labels at the input size and at the working size, ``(L, H, W)`` each."""
    state = predictor.init_state()
    outputs, working, argmaxes = [], [], []
    with capture_working_labels(argmaxes):
        for i, image in enumerate(images):
            pred = predictor.step(state, np.array(image), given.get(i))
            outputs.append(pred.labels.astype(np.int64))
            lut = np.array([0, *pred.object_ids], dtype=np.int64)
            labels = lut[argmaxes[-1].numpy()]
            if i in given_work:  # a given mask's objects are kept exactly as given
                g = given_work[i][0, 0].numpy()
                labels = np.where(g != 0, g, labels)
            working.append(labels)
    return np.stack(outputs), np.stack(working)


@dataclass
class Row:
    sequence: str
    case: str
    size: tuple[int, int]
    objects: int
    frames: int
    identical: float
    foreground: float
    seconds: tuple[float, float]


def compare(name: str, case: str, official: torch.nn.Module, predictor: VideoPredictor,
            images: list[Image.Image], given: dict[int, np.ndarray], resolution: int) -> Row:
    imgs = torch.stack([torchvision.transforms.functional.to_tensor(im) for im in images])[None]
    given_t = {i: torch.from_numpy(m.astype(np.int64))[None, None] for i, m in given.items()}
    work = working_size(tuple(imgs.shape[-2:]), resolution)
    imgs_w, given_w = resize_inputs(imgs, given_t, work)
    if work != tuple(imgs.shape[-2:]) and has_tiny_object(given_w):
        case += " (tiny object: native)"
        work, imgs_w, given_w, resolution = tuple(imgs.shape[-2:]), imgs, given_t, 0
    predictor.resolution = resolution
    t0 = time.perf_counter()
    ours_input, ours_work = run_emvos(predictor, images, given, given_w)
    t1 = time.perf_counter()
    theirs = run_official(official, imgs_w, given_w)
    t2 = time.perf_counter()
    if work == tuple(imgs.shape[-2:]):  # not resized: the working-size labels are emvos's final output
        assert np.array_equal(ours_input, ours_work), "capture_working_labels is out of step with emvos"
    assert theirs.shape == ours_work.shape, (theirs.shape, ours_work.shape)
    same = (theirs[1:] == ours_work[1:]).mean() if len(images) > 1 else 1.0
    objects = len({k for m in given.values() for k in np.unique(m).tolist() if k})
    return Row(name, case, work, objects, len(images), 100 * float(same), 100 * float((theirs[1:] != 0).mean()),
               (t1 - t0, t2 - t1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="the official EMVOS emvos.py")
    parser.add_argument("--davis-root", type=Path, required=True, help="a DAVIS tree (JPEGImages/480p, ...)")
    parser.add_argument("--sequences", nargs="+", help="sequence names (default: all under JPEGImages/480p)")
    parser.add_argument("--year", choices=("2016", "2017"), default="2017",
                        help="2016 binarises the masks (single object), as the official loader")
    parser.add_argument("--frames", type=int, default=20, help="first N frames of each sequence (0: all)")
    parser.add_argument("--checkpoint", type=Path, help="official EMVOS weights (default: random, --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--object-gain", type=float, default=1.0,
                        help="random weights: scale the decoder's object-specific inputs (see the module docstring)")
    parser.add_argument("--resolution", type=int, default=480, help="shorter side (0: native size)")
    parser.add_argument("--native", action="store_true", help="also compare at the native size when resized")
    parser.add_argument("--mid-video", type=int, metavar="K", help="also give the upper half of objects at frame K")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of both networks (float64 rules out rounding; see the module docstring)")
    parser.add_argument("--threshold", type=float, default=99.9, help="lowest acceptable identical %%")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        official_module = import_official(args.official)
    except EmvosInputError as exc:
        sys.exit(f"official_agreement: {exc}")
    names = args.sequences or sorted(p.name for p in (args.davis_root / "JPEGImages" / "480p").iterdir())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        dtype = getattr(torch, args.dtype)
        official, network = build_models(official_module, args.checkpoint, args.seed, args.object_gain,
                                         Path(tmp), dtype)
        predictor = VideoPredictor(network, device="cpu", resolution=args.resolution)
        for name in names:
            images, labels = read_sequence(args.davis_root, name, args.frames, args.year == "2016")
            resized = working_size(labels[0].shape, args.resolution) != labels[0].shape
            resolutions = [args.resolution] + ([0] if args.native and resized else [])
            ids = [int(k) for k in np.unique(labels[0]) if k]
            givens = [("first frame", {0: labels[0]})]
            if args.mid_video and len(ids) > 1:
                k = args.mid_video
                if not 0 < k < len(images):
                    sys.exit(f"official_agreement: --mid-video {k} is not within the {len(images)} frames")
                late = ids[len(ids) // 2:]
                early = np.where(np.isin(labels[0], late), 0, labels[0]).astype(np.uint8)
                later = np.where(np.isin(labels[k], late), labels[k], 0).astype(np.uint8)
                givens.append((f"objects {late} at frame {k}", {0: early, k: later}))
            for (case, given), resolution in itertools.product(givens, resolutions):
                label = f"{case}, {'native' if resolution == 0 else f'{resolution}p'}"
                row = compare(name, label, official, predictor, images, given, resolution)
                rows.append(row)
                print(f"{row.sequence}: {row.case}: {row.identical:.4f} % identical "
                      f"(emvos {row.seconds[0]:.0f} s, official {row.seconds[1]:.0f} s)", flush=True)

    print()
    header = f"{'sequence':<20} {'case':<44} {'size':>9} {'obj':>3} {'frames':>6} {'fg %':>6} {'identical %':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.sequence:<20} {r.case:<44} {r.size[1]:>4}x{r.size[0]:<4} {r.objects:>3} {r.frames:>6} "
              f"{r.foreground:>6.1f} {r.identical:>11.4f}")
    worst = min(r.identical for r in rows)
    weights = (f"checkpoint {args.checkpoint}" if args.checkpoint else
               f"random weights, seed {args.seed}, object gain {args.object_gain:g}")
    print(f"\n{weights}, {args.dtype}; frames 1.. compared (frame 0 is the given mask); "
          "fg %: official non-background pixels")
    verdict = "PASS" if worst >= args.threshold else "FAIL"
    print(f"lowest agreement {worst:.4f} % (threshold {args.threshold} %): {verdict}")
    return 0 if worst >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())
