"""emvos: semi-supervised video object segmentation with pixel-level equalized matching."""

__version__ = "0.1.0"
