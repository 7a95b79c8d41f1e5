"""Segment a batch's videos on a Ray cluster (or a local Ray instance): one predictor per worker.

Each worker is a Ray actor that builds its predictor once, from the batch's options, and segments
the videos it is handed with :func:`emvos.batch.runner.segment_one`, writing the PNGs and the
video's record itself: on a real cluster the output folder must be on storage every node shares
(and so must the videos and the manifest's paths). The next video goes to the first worker that is
free; a worker that dies is started again by Ray, and its video is recorded as failed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from emvos.batch.manifest import BatchVideo
from emvos.batch.runner import VideoRecord, record_failure, segment_one
from emvos.errors import EmvosInputError


class _Worker:
    """A Ray actor's state: the batch's options and the predictor built from them."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        from emvos.runtime import keep_freed_memory, use_huge_pages

        use_huge_pages()  # the process settings of the emvos command, before the predictor imports PyTorch
        keep_freed_memory()
        from emvos.inference.cli import make_predictor

        self.args, self.out = args, out
        self.predictor = make_predictor(args)

    def segment(self, video: BatchVideo) -> VideoRecord:
        return segment_one(self.args, video, self.out, self.predictor)


def segment_on_ray(args: argparse.Namespace, videos: list[BatchVideo], out: Path, address: str | None,
                   workers: int | None, cpus_per_worker: int) -> Iterator[VideoRecord]:
    """Segment ``videos`` on Ray actors of ``cpus_per_worker`` CPUs each, yielding records as they finish.

    Args:
        address: a Ray cluster's address (``auto``: the cluster this node belongs to); ``None``
            starts a Ray instance on this machine for the batch.
        workers: actors to start (``None``: as many as the cluster's CPUs allow, at least one).

    Raises:
        EmvosInputError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError as exc:
        raise EmvosInputError(f"--ray needs Ray ({exc}); pip install 'emvos[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EmvosInputError(f"--ray {address or ''}: cannot start or reach Ray ({exc}); check the "
                                  "address (ray status on the head node)") from None
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=-1)(_Worker)
        idle = [actor.remote(args, out) for _ in range(workers)]
        queue, running = list(videos), {}
        while queue or running:
            while queue and idle:
                worker, video = idle.pop(), queue.pop(0)
                running[worker.segment.remote(video)] = (worker, video)
            [ready], _ = ray.wait(list(running), num_returns=1)
            worker, video = running.pop(ready)
            idle.append(worker)
            try:
                record = ray.get(ready)
            except RayError as exc:
                record = record_failure(out, video, exc)
            yield record
    finally:
        if started_here:
            ray.shutdown()
