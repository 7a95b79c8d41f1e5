"""Inference settings that the command line and :class:`~emvos.inference.VideoPredictor` share.

Free of PyTorch, so that ``emvos segment --help`` and the checks of its inputs answer at once.
"""

from pathlib import Path

#: Default working resolution (shorter side), as in the paper's protocol (DAVIS 480p).
DEFAULT_RESOLUTION = 480
#: ``precision`` choices: float32, or autocast to bfloat16 / float16.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Default test-time adaptation steps (``--adapt``; :class:`~emvos.inference.adapt.AdaptSettings`).
DEFAULT_ADAPT_STEPS = 40

#: The model shipped inside the package, used when no checkpoint is given.
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "weights" / "emvos-lite.pt"
