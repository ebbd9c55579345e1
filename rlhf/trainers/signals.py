"""SIGINT/SIGTERM as a request to stop at the next step boundary, after saving a checkpoint; a
second one stops at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run stopped cleanly."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}. "
                         "Continue with the same command plus --resume.")


class ForcedStop(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop now, without a checkpoint. Nothing is left half-written:
    checkpoints, models and files are written to a temporary name and renamed when complete."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}; nothing was saved since the "
                         "last checkpoint. Continue from it with the same command plus --resume.")


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag that the loop reads at the next step boundary, so the
    step in flight finishes and is saved instead of being lost. A second signal raises
    ForcedStop at once (a step and a large save can take minutes)."""

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
        if self.signum is not None:
            raise ForcedStop(signum)
        self.signum = signum
        # os.write, not print: the handler may interrupt a write to stderr (the progress bar's), and
        # a buffered stream refuses a reentrant write.
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then "
                 "stopping. Press Ctrl-C again to stop at once (without saving).\n".encode())

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
