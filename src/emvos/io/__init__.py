"""Input and output: streaming frames, reading object masks, writing label PNGs and overlay videos.

One module per format: ``frames`` reads videos and image folders, ``masks`` reads and writes
object-id PNGs, ``mp4`` writes videos, ``files`` writes any file atomically; ``writers`` runs the
PNG and overlay writers on background threads.

Every problem with the user's files is raised as :class:`emvos.errors.EmvosInputError` with a
one-line message that names the file and says how to fix it.
"""

from emvos.io.frames import (
    DEFAULT_PREFETCH,
    FOLDER_FPS,
    FRAME_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FolderFrames,
    Frame,
    FrameSource,
    VideoFrames,
    natural_sort_key,
    open_frames,
)
from emvos.io.masks import (
    DAVIS_PALETTE,
    MaskImage,
    MaskMode,
    check_mask_size,
    collect_masks,
    full_palette,
    read_label_png,
    read_mask,
    write_label_png,
)
from emvos.io.mp4 import Mp4Writer
from emvos.io.writers import DEFAULT_QUEUE_DEPTH, LabelWriter, OverlayWriter, greyscale_overlay_palette, overlay

__all__ = [
    "DAVIS_PALETTE",
    "DEFAULT_PREFETCH",
    "DEFAULT_QUEUE_DEPTH",
    "FOLDER_FPS",
    "FRAME_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FolderFrames",
    "Frame",
    "FrameSource",
    "LabelWriter",
    "MaskImage",
    "MaskMode",
    "Mp4Writer",
    "OverlayWriter",
    "VideoFrames",
    "check_mask_size",
    "collect_masks",
    "full_palette",
    "greyscale_overlay_palette",
    "natural_sort_key",
    "open_frames",
    "overlay",
    "read_label_png",
    "read_mask",
    "write_label_png",
]
