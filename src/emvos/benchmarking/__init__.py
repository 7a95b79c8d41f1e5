"""Benchmarking, beside the library: ``emvos speed`` times emvos against the hardware's limit, and its memory.

For the paper's network (DenseNet-121) and the shipped model (EfficientNet-Lite0), each inference
mode of :data:`~emvos.benchmarking.settings.MODES` is timed over a grid of objects x resolutions,
one *cell* per combination:

* **model fps**: :meth:`VideoPredictor.step_many` on frames of a
  :class:`~emvos.benchmarking.scenes.SyntheticVideo` generated in memory, in chunks of the mode's
  lookahead, after ``warmup`` chunks (which also absorb ``torch.compile`` and the capture of CUDA
  graphs), timed over as many frames as fill ``cell_seconds`` (at least ``min_frames``, at most
  ``max_frames``, rounded up to whole chunks);
* **end-to-end fps**: as many frames of the same scene read from an mp4 (decoded on a background
  thread) and written as PNGs (:func:`emvos.eval.benchmark.segment_sequence`: wall time from
  opening the video to the last PNG on disk, the given first frame included);
* **GFLOPs per frame** of a propagated frame, counted with :class:`FlopCounterMode` (a multiply-add
  is 2 FLOPs; BatchNorm, softmax and other element-wise work are not counted), the GFLOP/s the
  model fps implies, and its fraction of the machine's **peak**, measured in the same run as the
  best of a large matmul and a 3x3 convolution in channels-last
  (:func:`~emvos.benchmarking.measure.measure_peaks`) in the mode's precision;
* **peak RSS** of the cell (on Linux the kernel's high-water mark is reset before each cell;
  elsewhere it is the process's peak so far), and peak VRAM on CUDA;
* **mask agreement**: the % of pixels identical to the reference mode
  :data:`~emvos.benchmarking.settings.REFERENCE_MODE` (unoptimised fp32) on the end-to-end frames
  after the given first frame.

Once per run, also: the **video-length sweep** (the shipped model, 1 object, the sweep's smallest
resolution, fp32, end to end over 100, 1,000 and 10,000 frames of one mp4: peak RSS must stay
flat); the **official implementation** (``--official-repo``) timed on the same frames at the
smallest resolution, its seconds per propagated frame from one call over a clip minus one call over
the first frame alone (without it, reference timings measured once on a 2-core CPU are quoted,
labelled as such); and, with ``--davis-root``, **J&F** of each mode on DAVIS sequences for the
models that have trained weights. Speed does not depend on weights, so models without a checkpoint
run with random weights (their masks, and so their agreement figures, are those of an untrained
network).

Without ``--modes``, the bf16 modes are left out on CPUs that run bf16 slower than fp32 (no native
bf16: the measured peaks say so, and the summary notes it). A cell costs about one warm-up frame plus
twice ``max(cell_seconds, min_frames frames)``; the 10,000-frame run is usually the longest part.

Results go to ``OUT/speed.json`` (rewritten after every cell, so an interrupted run keeps what it
measured) and ``OUT/speed.csv`` (one row per cell); ``--doc FILE`` writes a Markdown report from the
JSON, and ``--from-json`` re-renders one without running anything.

One module per job; the library's core (``model``, ``inference``, ``io``, ``data``, ``train``)
imports none of them:

* :mod:`~emvos.benchmarking.settings`: the inference modes, the sweep's settings, the networks to time;
* :mod:`~emvos.benchmarking.scenes`: the synthetic scenes, and their mp4s and first-frame masks;
* :mod:`~emvos.benchmarking.measure`: model time, FLOPs, the machine's peak, mask agreement, the machine;
* :mod:`~emvos.benchmarking.memory`: peak RSS per cell (``/proc`` and glibc) and peak VRAM;
* :mod:`~emvos.benchmarking.official`: the official implementation, timed in a process of its own;
* :mod:`~emvos.benchmarking.sweep`: :class:`~emvos.benchmarking.sweep.SpeedRun`, the measurements in order;
* :mod:`~emvos.benchmarking.report`: the tables, ``docs/performance.md``, ``speed.json`` and ``.csv``;
* :mod:`~emvos.benchmarking.cli`: ``emvos speed``'s options, their checks, and the run.
"""
