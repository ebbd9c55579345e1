"""SIGINT/SIGTERM as a request to stop at the next step boundary, after saving a checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path

import torch


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run stopped cleanly."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}. "
                         "Continue with the same command plus --resume.")


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag that the loop reads at the next step boundary, so the
    step in flight finishes and is saved instead of being lost."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def requested(self, accelerator) -> int | None:
        """The signal any process received (all processes must stop at the same step)."""
        flag = torch.tensor([float(self.signum or 0)], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, "max")
        return int(flag.item()) or None
