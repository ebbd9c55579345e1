"""Metrics of a run: one JSON line per logged step (metrics.jsonl), TensorBoard scalars, the
trackers of ``--report_to`` that accelerate drives (wandb, mlflow, trackio, comet_ml), a progress
bar, and the end-of-run summary (summary.json, printed too)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from rlhf.atomic_io import write_json_atomic, write_text_atomic
from rlhf.config.base import ConfigError


class RunLogger:
    """Metrics of the main process: one JSON line per logged step in ``metrics.jsonl``,
    TensorBoard scalars, and a tqdm progress bar showing the key numbers."""

    def __init__(self, output_dir: Path, accelerator, total_steps: int, report_to: str = "tensorboard",
                 disable_tqdm: bool = False, description: str = "train", postfix_keys: tuple[str, ...] = (),
                 resume: dict[str, Any] | None = None):
        """``resume``: a checkpoint's trainer state; metric lines written after it are dropped
        (the resumed run writes them again) and TensorBoard purges the steps after it."""
        self.enabled = accelerator.is_main_process
        self.postfix_keys = postfix_keys
        self.start_time = time.time()
        self.history: list[dict[str, Any]] = []
        self._jsonl = self._tb = self._bar = self._trackers = None
        if not self.enabled:
            return
        path = Path(output_dir) / "metrics.jsonl"
        if resume is not None:
            self.history = _truncate_jsonl(path, resume["metrics_lines"])
        elif path.exists():
            path.unlink()  # a fresh run in a used folder: its metrics start over
        self._jsonl = open(path, "a", encoding="utf-8")
        start_step = resume["step"] if resume else 0
        if getattr(accelerator, "log_with", None):  # set by make_accelerator from report_to
            self._trackers = accelerator
            accelerator.init_trackers("rlhf", config=_saved_config(output_dir))
        if "tensorboard" in [name.strip() for name in report_to.split(",")]:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"),
                                     purge_step=start_step + 1 if resume else None)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=start_step, desc=description, disable=disable_tqdm,
                         dynamic_ncols=True)

    @property
    def lines_written(self) -> int:
        return len(self.history)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _to_float(v) for k, v in metrics.items()},
                  "time/elapsed_s": round(time.time() - self.start_time, 3)}
        self.history.append(record)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, float) and math.isfinite(v)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._trackers is not None:
            self._trackers.log(scalars, step=step)
        shown = {k.split("/")[-1]: f"{record[k]:.4g}" for k in self.postfix_keys if k in record}
        if shown:
            self._bar.set_postfix(shown, refresh=False)

    def elapsed(self) -> float:
        return round(time.time() - self.start_time, 1)

    def restart_clock(self) -> None:
        """Start the progress bar's timer again, after work that is not a training step (an
        evaluation before step 1), so that the steps' rate and time left are theirs alone."""
        if self._bar is not None:
            self._bar.reset(total=self._bar.total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write_text(self, tag: str, text: str, step: int) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def end_progress(self) -> None:
        """Close the steps' progress bar when the steps are done, so the phases after them
        (final evaluation, statistics, saving) show their own bars, not the last step's time."""
        if self._bar is not None:
            self._bar.close()

    def close(self) -> None:
        if not self.enabled:
            return
        self._bar.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._trackers is not None:
            for tracker in self._trackers.trackers:  # not end_training(): it also ends the process group
                tracker.finish()


def _saved_config(output_dir: Path) -> dict[str, Any]:
    """The run's resolved options (config.yaml, written before the logger starts), for the trackers."""
    import yaml

    path = Path(output_dir) / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _truncate_jsonl(path: Path, keep: int) -> list[dict[str, Any]]:
    """Keep the first ``keep`` lines of a JSONL file (atomically) and return them parsed."""
    lines = path.read_text(encoding="utf-8").splitlines()[:keep] if path.exists() else []
    if len(lines) < keep:
        raise ConfigError(f"{path} has {len(lines)} lines but the checkpoint recorded {keep}: the metrics file "
                          "was modified or belongs to another run; restore it, or start over with --overwrite_output_dir")
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return [json.loads(line) for line in lines]


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (int, float)):
        return float(value)
    return value


def write_summary(output_dir: Path, summary: dict[str, Any], accelerator) -> None:
    """The short end-of-run summary: summary.json, and the same printed."""
    if not accelerator.is_main_process:
        return
    write_json_atomic(Path(output_dir) / "summary.json", summary, default=_to_float)
    width = max(len(k) for k in summary) if summary else 0
    print("\n".join(f"  {k.ljust(width)}  {_format(v)}" for k, v in summary.items()))


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
