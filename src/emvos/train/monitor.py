"""What a training run reports: a progress bar, ``metrics.csv`` and TensorBoard scalars.

Only rank 0 reports. Training rows average loss and IoU over the iterations since the previous row;
validation rows carry J&F, J and F. On resume, rows and scalars after the resumed iteration (written
by the interrupted run) are dropped, so the logs read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from emvos.errors import EmvosInputError
from emvos.io.files import atomic_path
from emvos.train.validation import ValidationResult

#: Columns of ``metrics.csv``.
CSV_COLUMNS = ("step", "stage", "loss", "iou", "lr", "it_per_s", "skipped", "val_jf", "val_j", "val_f")


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise EmvosInputError("TensorBoard logging needs the tensorboard package: pip install 'emvos[train]' "
                              "(or set tensorboard=false)") from None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class Monitor:
    """Progress bar, CSV and TensorBoard of one run (every method is a no-op when ``enabled`` is false).

    Args:
        out: the run's folder (``metrics.csv`` and ``tb/`` go there).
        start: iterations already done (0 for a new run).
        total: iterations of the whole run.
        enabled: whether this process reports (rank 0).
        progress: show the progress bar.
        tensorboard: write TensorBoard scalars.
    """

    def __init__(self, out: Path, start: int, total: int, enabled: bool, progress: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self._loss = self._iou = 0.0
        self._count = self._skipped = 0
        self._excluded = 0.0
        self._window_start = time.perf_counter()
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self._tb = _summary_writer(out / "tb", start + 1 if start else None) if tensorboard else None
        path = out / "metrics.csv"
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(self._rows_up_to(path, start) if start else [])
        self._file = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)
        self._bar = tqdm(total=total, initial=start, unit="it", desc="train", disable=not progress,
                         dynamic_ncols=True)

    @staticmethod
    def _rows_up_to(path: Path, step: int) -> list[dict[str, str]]:
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as f:
            return [row for row in csv.DictReader(f) if row.get("step", "").isdigit() and int(row["step"]) <= step]

    def iteration(self, loss: float | None, iou: float | None) -> None:
        """Record one iteration (``None`` for a skipped batch) and advance the bar."""
        if not self.enabled:
            return
        if loss is None or iou is None:
            self._skipped += 1
        else:
            self._loss += loss
            self._iou += iou
            self._count += 1
            self._bar.set_postfix(loss=f"{loss:.4f}", iou=f"{iou:.3f}", refresh=False)
        self._bar.update()

    def train_row(self, step: int, stage: str, lr: float) -> None:
        """Write the averages since the previous row."""
        if not self.enabled:
            return
        seconds = time.perf_counter() - self._window_start - self._excluded
        iterations = self._count + self._skipped
        loss = self._loss / self._count if self._count else math.nan
        iou = self._iou / self._count if self._count else math.nan
        speed = iterations / seconds if seconds > 0 else math.nan
        self._write({"step": step, "stage": stage, "loss": loss, "iou": iou, "lr": lr, "it_per_s": speed,
                     "skipped": self._skipped})
        if self._tb is not None:
            for key, value in (("loss", loss), ("iou", iou), ("lr", lr), ("it_per_s", speed)):
                self._tb.add_scalar(f"train/{key}", value, step)
        self._loss = self._iou = 0.0
        self._count = self._skipped = 0
        self._excluded = 0.0
        self._window_start = time.perf_counter()

    def validation(self, step: int, stage: str, result: ValidationResult, seconds: float) -> None:
        """Write a validation's scores; its ``seconds`` do not count against the training speed."""
        if not self.enabled:
            return
        self._excluded += seconds
        self._write({"step": step, "stage": stage, "val_jf": result.jf, "val_j": result.j, "val_f": result.f})
        if self._tb is not None:
            for key, value in (("jf", result.jf), ("j", result.j), ("f", result.f)):
                self._tb.add_scalar(f"val/{key}", value, step)
        self.message(f"step {step}: validation J&F {result.jf:.4f} (J {result.j:.4f}, F {result.f:.4f}) "
                     f"in {seconds:.1f} s")

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.enabled:
            tqdm.write(text)

    def _write(self, row: dict[str, Any]) -> None:
        self._csv.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        """Close the bar and the files."""
        if not self.enabled:
            return
        self._bar.close()
        self._file.close()
        if self._tb is not None:
            self._tb.close()
