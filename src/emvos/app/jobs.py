"""Long work (decoding, propagation, export) on a background thread, one job at a time.

The server starts a job and returns at once; the page polls :meth:`JobRunner.status` for
progress. A job checks for cancellation between frames (:meth:`Progress.advance`), so cancelling
stops it after the frame in hand, keeping every frame already finished.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from emvos.errors import EmvosInputError

JobState = Literal["running", "done", "failed", "cancelled"]

log = logging.getLogger(__name__)


class JobBusy(Exception):
    """Raised when a job is started while another one runs."""


class JobCancelled(Exception):
    """Raised inside a job by :meth:`Progress.advance` once the job was cancelled."""


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job.

    Attributes:
        id: Number of the job, counting from 1 in this server.
        kind: What it does: ``open``, ``propagate``, ``export``.
        state: ``running``, ``done``, ``failed`` or ``cancelled``.
        done: Units of work finished (frames).
        total: Units of work in all, or ``None`` while unknown.
        message: What it is doing, or what it did.
        error: Why it failed (one line), for ``failed``.
    """

    id: int
    kind: str
    state: JobState
    done: int
    total: int | None
    message: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return asdict(self)


class Progress:
    """The handle a running job reports through and checks for cancellation."""

    def __init__(self, runner: JobRunner, job_id: int) -> None:
        self._runner = runner
        self._job_id = job_id
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the job was asked to stop."""
        return self._cancel.is_set()

    def update(self, *, total: int | None = None, message: str | None = None) -> None:
        """Set the total amount of work and/or the message shown; raise :class:`JobCancelled` if cancelled."""
        self._runner._update(self._job_id, total=total, message=message)
        self.check()

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more units done; raise :class:`JobCancelled` if the job was cancelled."""
        self._runner._update(self._job_id, advance=count)
        self.check()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled."""
        if self._cancel.is_set():
            raise JobCancelled

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._cancel.set()


Work = Callable[[Progress], str]


class JobRunner:
    """Runs at most one job at a time on a daemon thread and keeps the status of the last one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: JobStatus | None = None
        self._progress: Progress | None = None
        self._thread: threading.Thread | None = None

    def start(self, kind: str, work: Work, message: str = "") -> JobStatus:
        """Run ``work(progress)`` on a new thread; it returns the message shown when it is done.

        An :class:`EmvosInputError` raised by ``work`` fails the job with its message; any other
        exception fails it too, and is logged with its traceback.

        Raises:
            JobBusy: a job is running.
        """
        with self._lock:
            if self._status is not None and self._status.state == "running":
                raise JobBusy(f"{self._status.kind} is running; wait for it or cancel it")
            job_id = 1 if self._status is None else self._status.id + 1
            progress = Progress(self, job_id)
            self._status = JobStatus(job_id, kind, "running", 0, None, message)
            self._progress = progress
            thread = threading.Thread(target=self._run, args=(job_id, work, progress), name=f"emvos-job-{kind}",
                                      daemon=True)
            self._thread = thread
            status = self._status
        thread.start()
        return status

    def _run(self, job_id: int, work: Work, progress: Progress) -> None:
        state: JobState
        error = None
        message = ""
        try:
            message = work(progress)
            state = "done"
        except JobCancelled:
            state, message = "cancelled", "cancelled; the frames finished before are kept"
        except EmvosInputError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:  # the page must hear of every failure, not only of bad input
            log.exception("job %d failed", job_id)
            state, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        self._update(job_id, state=state, message=message, error=error)

    def _update(self, job_id: int, *, advance: int = 0, total: int | None = None, message: str | None = None,
                state: JobState | None = None, error: str | None = None) -> None:
        with self._lock:
            status = self._status
            if status is None or status.id != job_id:
                return
            self._status = replace(
                status,
                done=status.done + advance,
                total=status.total if total is None else total,
                message=status.message if message is None else message,
                state=status.state if state is None else state,
                error=error if state is not None else status.error,
            )

    def status(self) -> JobStatus | None:
        """The running job, or the last one; ``None`` before the first."""
        with self._lock:
            return self._status

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        status = self.status()
        return status is not None and status.state == "running"

    def cancel(self) -> bool:
        """Ask the running job to stop after its current frame; returns whether one was running."""
        with self._lock:
            if self._status is None or self._status.state != "running" or self._progress is None:
                return False
            self._progress.cancel()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running job's thread to end; returns whether no job is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy
